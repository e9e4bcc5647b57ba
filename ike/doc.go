// Package ike will hold the IKEv2 (RFC 7296) initiator and responder that
// negotiate the tunnel package's SAs with RFC 3554 address sets.
package ike
