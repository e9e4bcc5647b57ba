// Package version holds the product name and version stamped into every binary.
package version

// Version is overwritten at link time (-ldflags "-X ...Version=1.2.3").
var Version = "0.1.0-dev"

// Product is the user-visible name.
const Product = "roamsec"
