package message

import "strconv"

// ExchangeType is the IKE header's Exchange Type (RFC 7296 §3.1).
type ExchangeType uint8

// Exchange types (RFC 7296 §3.1; IKE_SESSION_RESUME RFC 5723,
// IKE_INTERMEDIATE RFC 9242).
const (
	IKE_SA_INIT        ExchangeType = 34
	IKE_AUTH           ExchangeType = 35
	CREATE_CHILD_SA    ExchangeType = 36
	INFORMATIONAL      ExchangeType = 37
	IKE_SESSION_RESUME ExchangeType = 38
	IKE_INTERMEDIATE   ExchangeType = 43
)

func (e ExchangeType) String() string {
	switch e {
	case IKE_SA_INIT:
		return "IKE_SA_INIT"
	case IKE_AUTH:
		return "IKE_AUTH"
	case CREATE_CHILD_SA:
		return "CREATE_CHILD_SA"
	case INFORMATIONAL:
		return "INFORMATIONAL"
	case IKE_SESSION_RESUME:
		return "IKE_SESSION_RESUME"
	case IKE_INTERMEDIATE:
		return "IKE_INTERMEDIATE"
	}
	return "ExchangeType(" + strconv.Itoa(int(e)) + ")"
}

// PayloadType is a Next Payload value (RFC 7296 §3.2).
type PayloadType uint8

// Payload types (RFC 7296 §3.2; SKF RFC 7383 §2.5).
const (
	PayloadNone     PayloadType = 0
	PayloadSA       PayloadType = 33
	PayloadKE       PayloadType = 34
	PayloadIDi      PayloadType = 35
	PayloadIDr      PayloadType = 36
	PayloadCERT     PayloadType = 37
	PayloadCERTREQ  PayloadType = 38
	PayloadAUTH     PayloadType = 39
	PayloadNonce    PayloadType = 40
	PayloadNotify   PayloadType = 41
	PayloadDelete   PayloadType = 42
	PayloadVendorID PayloadType = 43
	PayloadTSi      PayloadType = 44
	PayloadTSr      PayloadType = 45
	PayloadSK       PayloadType = 46
	PayloadCP       PayloadType = 47
	PayloadEAP      PayloadType = 48
	PayloadSKF      PayloadType = 53
)

// String gives RFC 7296's notation (§3.2 table), as in "[ SA KE Ni N ]".
func (t PayloadType) String() string {
	switch t {
	case PayloadNone:
		return "NONE"
	case PayloadSA:
		return "SA"
	case PayloadKE:
		return "KE"
	case PayloadIDi:
		return "IDi"
	case PayloadIDr:
		return "IDr"
	case PayloadCERT:
		return "CERT"
	case PayloadCERTREQ:
		return "CERTREQ"
	case PayloadAUTH:
		return "AUTH"
	case PayloadNonce:
		return "Nonce"
	case PayloadNotify:
		return "N"
	case PayloadDelete:
		return "D"
	case PayloadVendorID:
		return "V"
	case PayloadTSi:
		return "TSi"
	case PayloadTSr:
		return "TSr"
	case PayloadSK:
		return "SK"
	case PayloadCP:
		return "CP"
	case PayloadEAP:
		return "EAP"
	case PayloadSKF:
		return "SKF"
	}
	return "PayloadType(" + strconv.Itoa(int(t)) + ")"
}

// Header flags (RFC 7296 §3.1). The other bits are reserved: sent as zero,
// ignored on receipt, and kept as received in Header.Flags.
const (
	FlagInitiator uint8 = 0x08
	FlagVersion   uint8 = 0x10
	FlagResponse  uint8 = 0x20
)

// ProtocolID is a Protocol ID of the SA, Notify and Delete payloads
// (RFC 7296 §3.3.1).
type ProtocolID uint8

const (
	ProtoIKE ProtocolID = 1
	ProtoAH  ProtocolID = 2
	ProtoESP ProtocolID = 3
)

func (p ProtocolID) String() string {
	switch p {
	case ProtoIKE:
		return "IKE"
	case ProtoAH:
		return "AH"
	case ProtoESP:
		return "ESP"
	}
	return "ProtocolID(" + strconv.Itoa(int(p)) + ")"
}

// TransformType is a transform substructure's type (RFC 7296 §3.3.2).
type TransformType uint8

const (
	TransformENCR  TransformType = 1
	TransformPRF   TransformType = 2
	TransformINTEG TransformType = 3
	TransformDH    TransformType = 4 // "Key Exchange Method" since RFC 9370
	TransformESN   TransformType = 5
)

func (t TransformType) String() string {
	switch t {
	case TransformENCR:
		return "ENCR"
	case TransformPRF:
		return "PRF"
	case TransformINTEG:
		return "INTEG"
	case TransformDH:
		return "DH"
	case TransformESN:
		return "ESN"
	}
	return "TransformType(" + strconv.Itoa(int(t)) + ")"
}

// Transform IDs (IANA "IKEv2 Transform Attribute Types" and the per-type
// registries of RFC 7296 §3.3.2). Untyped, so they fit Transform.ID and
// KE.Group (both uint16) without conversion.
const (
	// Type 1, encryption.
	ENCR_3DES              = 3
	ENCR_NULL              = 11
	ENCR_AES_CBC           = 12
	ENCR_AES_CTR           = 13
	ENCR_AES_CCM_8         = 14
	ENCR_AES_CCM_12        = 15
	ENCR_AES_CCM_16        = 16
	ENCR_AES_GCM_8         = 18
	ENCR_AES_GCM_12        = 19
	ENCR_AES_GCM_16        = 20
	ENCR_CAMELLIA_CBC      = 23
	ENCR_CAMELLIA_CTR      = 24
	ENCR_CHACHA20_POLY1305 = 28

	// Type 2, pseudorandom functions.
	PRF_HMAC_SHA1     = 2
	PRF_AES128_XCBC   = 4
	PRF_HMAC_SHA2_256 = 5
	PRF_HMAC_SHA2_384 = 6
	PRF_HMAC_SHA2_512 = 7
	PRF_AES128_CMAC   = 8

	// Type 3, integrity.
	AUTH_NONE              = 0
	AUTH_HMAC_SHA1_96      = 2
	AUTH_AES_XCBC_96       = 5
	AUTH_HMAC_SHA2_256_128 = 12
	AUTH_HMAC_SHA2_384_192 = 13
	AUTH_HMAC_SHA2_512_256 = 14

	// Type 4, Diffie-Hellman groups (also KE.Group).
	DH_NONE       = 0
	DH_MODP2048   = 14
	DH_MODP3072   = 15
	DH_MODP4096   = 16
	DH_ECP256     = 19
	DH_ECP384     = 20
	DH_ECP521     = 21
	DH_CURVE25519 = 31
	DH_CURVE448   = 32

	// Type 5, extended sequence numbers.
	ESN_NO  = 0
	ESN_YES = 1
)

// AttrKeyLength is the Key Length transform attribute, the only one RFC
// 7296 defines (§3.3.5); it is always in TV format.
const AttrKeyLength = 14

var transformIDNames = map[TransformType]map[uint16]string{
	TransformENCR: {
		ENCR_3DES: "ENCR_3DES", ENCR_NULL: "ENCR_NULL", ENCR_AES_CBC: "ENCR_AES_CBC",
		ENCR_AES_CTR: "ENCR_AES_CTR", ENCR_AES_CCM_8: "ENCR_AES_CCM_8",
		ENCR_AES_CCM_12: "ENCR_AES_CCM_12", ENCR_AES_CCM_16: "ENCR_AES_CCM_16",
		ENCR_AES_GCM_8: "ENCR_AES_GCM_8", ENCR_AES_GCM_12: "ENCR_AES_GCM_12",
		ENCR_AES_GCM_16: "ENCR_AES_GCM_16", ENCR_CAMELLIA_CBC: "ENCR_CAMELLIA_CBC",
		ENCR_CAMELLIA_CTR: "ENCR_CAMELLIA_CTR", ENCR_CHACHA20_POLY1305: "ENCR_CHACHA20_POLY1305",
	},
	TransformPRF: {
		PRF_HMAC_SHA1: "PRF_HMAC_SHA1", PRF_AES128_XCBC: "PRF_AES128_XCBC",
		PRF_HMAC_SHA2_256: "PRF_HMAC_SHA2_256", PRF_HMAC_SHA2_384: "PRF_HMAC_SHA2_384",
		PRF_HMAC_SHA2_512: "PRF_HMAC_SHA2_512", PRF_AES128_CMAC: "PRF_AES128_CMAC",
	},
	TransformINTEG: {
		AUTH_NONE: "AUTH_NONE", AUTH_HMAC_SHA1_96: "AUTH_HMAC_SHA1_96", AUTH_AES_XCBC_96: "AUTH_AES_XCBC_96",
		AUTH_HMAC_SHA2_256_128: "AUTH_HMAC_SHA2_256_128", AUTH_HMAC_SHA2_384_192: "AUTH_HMAC_SHA2_384_192",
		AUTH_HMAC_SHA2_512_256: "AUTH_HMAC_SHA2_512_256",
	},
	TransformDH: {
		DH_NONE: "DH_NONE", DH_MODP2048: "DH_MODP2048", DH_MODP3072: "DH_MODP3072", DH_MODP4096: "DH_MODP4096",
		DH_ECP256: "DH_ECP256", DH_ECP384: "DH_ECP384", DH_ECP521: "DH_ECP521",
		DH_CURVE25519: "DH_CURVE25519", DH_CURVE448: "DH_CURVE448",
	},
	TransformESN: {ESN_NO: "ESN_NO", ESN_YES: "ESN_YES"},
}

// TransformIDName names a transform ID by its constant here, or gives
// type and number: "ENCR(99)".
func TransformIDName(t TransformType, id uint16) string {
	if n, ok := transformIDNames[t][id]; ok {
		return n
	}
	return t.String() + "(" + strconv.Itoa(int(id)) + ")"
}

// IDType is an Identification payload's ID Type (RFC 7296 §3.5).
type IDType uint8

const (
	ID_IPV4_ADDR   IDType = 1
	ID_FQDN        IDType = 2
	ID_RFC822_ADDR IDType = 3
	ID_IPV6_ADDR   IDType = 5
	ID_DER_ASN1_DN IDType = 9
	ID_DER_ASN1_GN IDType = 10
	ID_KEY_ID      IDType = 11
	ID_NULL        IDType = 13 // RFC 7619
)

func (t IDType) String() string {
	switch t {
	case ID_IPV4_ADDR:
		return "ID_IPV4_ADDR"
	case ID_FQDN:
		return "ID_FQDN"
	case ID_RFC822_ADDR:
		return "ID_RFC822_ADDR"
	case ID_IPV6_ADDR:
		return "ID_IPV6_ADDR"
	case ID_DER_ASN1_DN:
		return "ID_DER_ASN1_DN"
	case ID_DER_ASN1_GN:
		return "ID_DER_ASN1_GN"
	case ID_KEY_ID:
		return "ID_KEY_ID"
	case ID_NULL:
		return "ID_NULL"
	}
	return "IDType(" + strconv.Itoa(int(t)) + ")"
}

// Certificate encodings of CERT and CERTREQ (RFC 7296 §3.6).
const (
	CERT_X509_SIGNATURE       = 4
	CERT_CRL                  = 7
	CERT_HASH_URL_X509        = 12
	CERT_HASH_URL_X509_BUNDLE = 13
	CERT_RAW_PUBLIC_KEY       = 15 // RFC 7670
)

// Authentication methods of the AUTH payload (RFC 7296 §3.8; ECDSA RFC
// 4754; NULL RFC 7619; Digital Signature RFC 7427).
const (
	AUTH_METHOD_RSA_SIG           = 1
	AUTH_METHOD_SHARED_KEY_MIC    = 2
	AUTH_METHOD_DSS_SIG           = 3
	AUTH_METHOD_ECDSA_SHA256_P256 = 9
	AUTH_METHOD_ECDSA_SHA384_P384 = 10
	AUTH_METHOD_ECDSA_SHA512_P521 = 11
	AUTH_METHOD_NULL              = 13
	AUTH_METHOD_DIGITAL_SIGNATURE = 14
)

// Traffic selector types (RFC 7296 §3.13.1). The encoder derives them
// from the address family; the parser accepts no others.
const (
	TS_IPV4_ADDR_RANGE = 7
	TS_IPV6_ADDR_RANGE = 8
)

// Configuration payload types (RFC 7296 §3.15).
const (
	CFG_REQUEST = 1
	CFG_REPLY   = 2
	CFG_SET     = 3
	CFG_ACK     = 4
)

// Configuration attribute types (RFC 7296 §3.15.1).
const (
	INTERNAL_IP4_ADDRESS = 1
	INTERNAL_IP4_NETMASK = 2
	INTERNAL_IP4_DNS     = 3
	INTERNAL_IP4_NBNS    = 4
	INTERNAL_IP4_DHCP    = 6
	APPLICATION_VERSION  = 7
	INTERNAL_IP6_ADDRESS = 8
	INTERNAL_IP6_DNS     = 10
	INTERNAL_IP6_DHCP    = 12
	INTERNAL_IP4_SUBNET  = 13
	SUPPORTED_ATTRIBUTES = 14
	INTERNAL_IP6_SUBNET  = 15
)

// NotifyType is a Notify Message Type (RFC 7296 §3.10.1). Types below
// 16384 report errors, the others status.
type NotifyType uint16

// Notify message types, with IANA's names ("IKEv2 Notify Message Types").
const (
	// Errors.
	UNSUPPORTED_CRITICAL_PAYLOAD NotifyType = 1
	INVALID_IKE_SPI              NotifyType = 4
	INVALID_MAJOR_VERSION        NotifyType = 5
	INVALID_SYNTAX               NotifyType = 7
	INVALID_MESSAGE_ID           NotifyType = 9
	INVALID_SPI                  NotifyType = 11
	NO_PROPOSAL_CHOSEN           NotifyType = 14
	INVALID_KE_PAYLOAD           NotifyType = 17
	AUTHENTICATION_FAILED        NotifyType = 24
	SINGLE_PAIR_REQUIRED         NotifyType = 34
	NO_ADDITIONAL_SAS            NotifyType = 35
	INTERNAL_ADDRESS_FAILURE     NotifyType = 36
	FAILED_CP_REQUIRED           NotifyType = 37
	TS_UNACCEPTABLE              NotifyType = 38
	INVALID_SELECTORS            NotifyType = 39
	UNACCEPTABLE_ADDRESSES       NotifyType = 40 // RFC 4555
	UNEXPECTED_NAT_DETECTED      NotifyType = 41 // RFC 4555
	TEMPORARY_FAILURE            NotifyType = 43
	CHILD_SA_NOT_FOUND           NotifyType = 44

	// Status.
	INITIAL_CONTACT                 NotifyType = 16384
	SET_WINDOW_SIZE                 NotifyType = 16385
	ADDITIONAL_TS_POSSIBLE          NotifyType = 16386
	IPCOMP_SUPPORTED                NotifyType = 16387
	NAT_DETECTION_SOURCE_IP         NotifyType = 16388
	NAT_DETECTION_DESTINATION_IP    NotifyType = 16389
	COOKIE                          NotifyType = 16390
	USE_TRANSPORT_MODE              NotifyType = 16391
	HTTP_CERT_LOOKUP_SUPPORTED      NotifyType = 16392
	REKEY_SA                        NotifyType = 16393
	ESP_TFC_PADDING_NOT_SUPPORTED   NotifyType = 16394
	NON_FIRST_FRAGMENTS_ALSO        NotifyType = 16395
	MOBIKE_SUPPORTED                NotifyType = 16396 // RFC 4555
	ADDITIONAL_IP4_ADDRESS          NotifyType = 16397 // RFC 4555
	ADDITIONAL_IP6_ADDRESS          NotifyType = 16398 // RFC 4555
	NO_ADDITIONAL_ADDRESSES         NotifyType = 16399 // RFC 4555
	UPDATE_SA_ADDRESSES             NotifyType = 16400 // RFC 4555
	COOKIE2                         NotifyType = 16401 // RFC 4555
	NO_NATS_ALLOWED                 NotifyType = 16402 // RFC 4555
	AUTH_LIFETIME                   NotifyType = 16403 // RFC 4478
	MULTIPLE_AUTH_SUPPORTED         NotifyType = 16404 // RFC 4739
	ANOTHER_AUTH_FOLLOWS            NotifyType = 16405 // RFC 4739
	REDIRECT_SUPPORTED              NotifyType = 16406 // RFC 5685
	EAP_ONLY_AUTHENTICATION         NotifyType = 16417 // RFC 5998
	CHILDLESS_IKEV2_SUPPORTED       NotifyType = 16418 // RFC 6023
	IKEV2_MESSAGE_ID_SYNC_SUPPORTED NotifyType = 16420 // RFC 6311
	// IKEV2_REPLAY_COUNTER_SYNC_SUPPORTED, IKEV2_MESSAGE_ID_SYNC and
	// IPSEC_REPLAY_COUNTER_SYNC: RFC 6311 §§3-4 (IANA's IKEv2 Notify
	// Message Status Types registry).
	IKEV2_REPLAY_COUNTER_SYNC_SUPPORTED NotifyType = 16421
	IKEV2_MESSAGE_ID_SYNC               NotifyType = 16422
	IPSEC_REPLAY_COUNTER_SYNC           NotifyType = 16423
	IKEV2_FRAGMENTATION_SUPPORTED       NotifyType = 16430 // RFC 7383
	SIGNATURE_HASH_ALGORITHMS           NotifyType = 16431 // RFC 7427

	// MSG_ID_SYN_SUPPORTED is strongSwan's short name for
	// IKEV2_MESSAGE_ID_SYNC_SUPPORTED.
	MSG_ID_SYN_SUPPORTED = IKEV2_MESSAGE_ID_SYNC_SUPPORTED
)

var notifyNames = map[NotifyType]string{
	UNSUPPORTED_CRITICAL_PAYLOAD:        "UNSUPPORTED_CRITICAL_PAYLOAD",
	INVALID_IKE_SPI:                     "INVALID_IKE_SPI",
	INVALID_MAJOR_VERSION:               "INVALID_MAJOR_VERSION",
	INVALID_SYNTAX:                      "INVALID_SYNTAX",
	INVALID_MESSAGE_ID:                  "INVALID_MESSAGE_ID",
	INVALID_SPI:                         "INVALID_SPI",
	NO_PROPOSAL_CHOSEN:                  "NO_PROPOSAL_CHOSEN",
	INVALID_KE_PAYLOAD:                  "INVALID_KE_PAYLOAD",
	AUTHENTICATION_FAILED:               "AUTHENTICATION_FAILED",
	SINGLE_PAIR_REQUIRED:                "SINGLE_PAIR_REQUIRED",
	NO_ADDITIONAL_SAS:                   "NO_ADDITIONAL_SAS",
	INTERNAL_ADDRESS_FAILURE:            "INTERNAL_ADDRESS_FAILURE",
	FAILED_CP_REQUIRED:                  "FAILED_CP_REQUIRED",
	TS_UNACCEPTABLE:                     "TS_UNACCEPTABLE",
	INVALID_SELECTORS:                   "INVALID_SELECTORS",
	UNACCEPTABLE_ADDRESSES:              "UNACCEPTABLE_ADDRESSES",
	UNEXPECTED_NAT_DETECTED:             "UNEXPECTED_NAT_DETECTED",
	TEMPORARY_FAILURE:                   "TEMPORARY_FAILURE",
	CHILD_SA_NOT_FOUND:                  "CHILD_SA_NOT_FOUND",
	INITIAL_CONTACT:                     "INITIAL_CONTACT",
	SET_WINDOW_SIZE:                     "SET_WINDOW_SIZE",
	ADDITIONAL_TS_POSSIBLE:              "ADDITIONAL_TS_POSSIBLE",
	IPCOMP_SUPPORTED:                    "IPCOMP_SUPPORTED",
	NAT_DETECTION_SOURCE_IP:             "NAT_DETECTION_SOURCE_IP",
	NAT_DETECTION_DESTINATION_IP:        "NAT_DETECTION_DESTINATION_IP",
	COOKIE:                              "COOKIE",
	USE_TRANSPORT_MODE:                  "USE_TRANSPORT_MODE",
	HTTP_CERT_LOOKUP_SUPPORTED:          "HTTP_CERT_LOOKUP_SUPPORTED",
	REKEY_SA:                            "REKEY_SA",
	ESP_TFC_PADDING_NOT_SUPPORTED:       "ESP_TFC_PADDING_NOT_SUPPORTED",
	NON_FIRST_FRAGMENTS_ALSO:            "NON_FIRST_FRAGMENTS_ALSO",
	MOBIKE_SUPPORTED:                    "MOBIKE_SUPPORTED",
	ADDITIONAL_IP4_ADDRESS:              "ADDITIONAL_IP4_ADDRESS",
	ADDITIONAL_IP6_ADDRESS:              "ADDITIONAL_IP6_ADDRESS",
	NO_ADDITIONAL_ADDRESSES:             "NO_ADDITIONAL_ADDRESSES",
	UPDATE_SA_ADDRESSES:                 "UPDATE_SA_ADDRESSES",
	COOKIE2:                             "COOKIE2",
	NO_NATS_ALLOWED:                     "NO_NATS_ALLOWED",
	AUTH_LIFETIME:                       "AUTH_LIFETIME",
	MULTIPLE_AUTH_SUPPORTED:             "MULTIPLE_AUTH_SUPPORTED",
	ANOTHER_AUTH_FOLLOWS:                "ANOTHER_AUTH_FOLLOWS",
	REDIRECT_SUPPORTED:                  "REDIRECT_SUPPORTED",
	EAP_ONLY_AUTHENTICATION:             "EAP_ONLY_AUTHENTICATION",
	CHILDLESS_IKEV2_SUPPORTED:           "CHILDLESS_IKEV2_SUPPORTED",
	IKEV2_MESSAGE_ID_SYNC_SUPPORTED:     "IKEV2_MESSAGE_ID_SYNC_SUPPORTED",
	IKEV2_REPLAY_COUNTER_SYNC_SUPPORTED: "IKEV2_REPLAY_COUNTER_SYNC_SUPPORTED",
	IKEV2_MESSAGE_ID_SYNC:               "IKEV2_MESSAGE_ID_SYNC",
	IPSEC_REPLAY_COUNTER_SYNC:           "IPSEC_REPLAY_COUNTER_SYNC",
	IKEV2_FRAGMENTATION_SUPPORTED:       "IKEV2_FRAGMENTATION_SUPPORTED",
	SIGNATURE_HASH_ALGORITHMS:           "SIGNATURE_HASH_ALGORITHMS",
}

func (t NotifyType) String() string {
	if n, ok := notifyNames[t]; ok {
		return n
	}
	return "NotifyType(" + strconv.Itoa(int(t)) + ")"
}

// IsError reports an error type (below 16384): unrecognised ones in a
// response mean the request failed (RFC 7296 §3.10.1).
func (t NotifyType) IsError() bool { return t < 16384 }
