// Package message is the IKEv2 wire format (RFC 7296 §3): the fixed
// header, the generic payload header and every payload body, plus the
// Encrypted Fragment payload of RFC 7383 §2.5. It encodes and decodes
// only; there is no cryptography here. The Encrypted (SK) and Encrypted
// Fragment (SKF) payloads are carried as opaque bytes (*Encrypted) that the
// caller decrypts, then parses with ParsePayloads.
//
// Payloads are pointers (*SA, *Notify, ...): only pointer types implement
// Payload, so a []Payload never mixes values and pointers and Find[*SA]
// finds every SA.
//
// Parsed payloads alias the input buffer (no copies): the caller must not
// reuse the buffer while it still uses the payloads.
//
// Naming: values of IANA registries keep their IANA names in upper case
// (IKE_SA_INIT, ENCR_AES_GCM_16, NAT_DETECTION_SOURCE_IP, ID_FQDN,
// INTERNAL_IP4_ADDRESS, CFG_REQUEST, TS_IPV4_ADDR_RANGE), so they can be
// grepped against the registry and against other implementations' logs.
// Where IANA's name is prose (authentication methods, certificate
// encodings, Diffie-Hellman groups) the constant is AUTH_METHOD_*, CERT_*,
// DH_*. Types of this package and the payload and flag constants use Go
// names (PayloadSA, FlagResponse, TransformENCR, ProtoESP).
//
// What the parser checks, with the rule it enforces:
//
//   - RFC 7296 §3.1: the header is 28 bytes, major version 2 (the minor
//     version and the reserved flags are ignored), and Parse wants the
//     header's Length to be the datagram's length.
//   - §3.2: every payload length is at least 4 and within the message; the
//     chain ends exactly at the end of the message (no trailing bytes).
//   - §3.3.1, §3.3.2: proposal and transform lengths and counts, the Last
//     Substruc values 0/2 and 0/3 agreeing with the position, SPI sizes
//     (IKE 0 or 8, AH and ESP 4), proposal numbers from 1 and consecutive.
//   - §3.3.5: transform attributes in TV or TLV format, Key Length (14) in
//     TV format only.
//   - §3.4 KE, §3.5 ID (IPv4 4 bytes, IPv6 16), §3.6/§3.7 CERT and CERTREQ,
//     §3.8 AUTH, §3.9 Nonce of 16 to 256 bytes, §3.10 Notify SPI size (0,
//     or 4 for AH and ESP), §3.11 Delete SPI sizes and counts, §3.13.1
//     traffic selector types 7 and 8 with lengths 16 and 40 and ranges in
//     order, §3.15.1 configuration attribute lengths, §3.14 and RFC 7383
//     §2.5: SK and SKF are the last payload, SKF numbering.
//
// Every error wraps ErrInvalidSyntax (a *SyntaxError saying where and which
// rule), except a wrong major version, which wraps ErrInvalidMajorVersion.
package message
