// Package mobility will hold the path set and the SCTP-heartbeat-driven
// failover that moves an SA between uplinks without renegotiation.
package mobility
