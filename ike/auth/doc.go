// Package auth holds IKEv2 authentication (RFC 7296 §2.15, RFC 7427) and the
// identities it binds (RFC 7296 §3.5, RFC 4945 §3.1): pre-shared keys,
// digital signatures with certificates, certificate path validation and the
// addresses a certificate gives its holder authority for (RFC 3554 §4).
//
// It knows nothing of IKE messages: the state machine hands it the signed
// octets (SignedOctets builds them) and the payload bodies, and sends what it
// returns. Every Verify and VerifyPSK error wraps ErrAuthFailed, so the caller
// can answer AUTHENTICATION_FAILED without inspecting it; no error carries key
// material or AUTH data.
//
// The target peer is strongSwan 5.9 (charon with the openssl plugin): the
// signature encodings, the DN string syntax (ParseIdentity) and the identity
// comparisons follow what it sends and accepts.
package auth
