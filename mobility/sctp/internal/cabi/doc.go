// Package cabi reads sizes, offsets and constants from <linux/sctp.h> with
// cgo, for the layout test of package sctp. Only that test imports it, so no
// binary links it; with CGO_ENABLED=0 it is empty.
//
// Go does not allow cgo in _test.go files, hence this package.
package cabi
