// Package config reads the one YAML file each daemon (gateway,
// roadwarrior) is configured with, and builds the tunnel objects it
// describes. This version takes static (manual) keys, like `ip xfrm
// state`; IKEv2 comes later and static keys stay a supported mode.
//
//	c, err := config.Load("/etc/roamsec/gateway.yaml") // every problem, as file:line: path: reason
//	b, err := c.Build()                                // SAs, SAD, SPD; c's keys are zeroed
//
// Problems are reported all at once, each naming the file, the line, the
// field path and the reason (see FieldError): the checks of single fields
// and the checks across fields run in one pass. Unknown fields are errors.
// Non-fatal findings (an example key, a routing table no rule consults,
// inline keys in a file others can read) are Config.Warnings.
// Key material never appears in an error, a warning, or a printed Config.
//
// # Schema
//
// packaging/examples/gateway.yaml and roadwarrior.yaml are the annotated
// reference; every field:
//
//	role            gateway | roadwarrior (required)
//	log.level       debug | info | warn | error (info)
//	log.format      text | json (text)
//	control_socket  absolute path (/run/roamsec/<role>.sock)
//	tun.name        interface name, <= 15 characters ("" = kernel picks)
//	tun.backend     wireguard | water (wireguard)
//	tun.mtu         0 = path_mtu minus the ESP overhead, see Config.TUNMTU (0)
//	tun.path_mtu    576-65535 (1500)
//	tun.tx_queue_len 1-65536 packets the kernel queues for our reader (gateway 4096, road warrior 1000)
//	tun.addresses   [prefix] installed on the TUN; a bare address is /32 or /128
//	tun.table       routing table for the routes, 0 = main (0)
//	tun.bypass_rule {mark: 1-2^32-1 (required), priority: 1-32765 (100)}:
//	                "not fwmark mark lookup table"; the sockets get SO_MARK mark
//	tun.routes      [{dst: prefix (required), src: address, metric: number}]
//	transport.listen        [address] our outer addresses (empty = any)
//	transport.udp_port      1-65535 (4500)
//	transport.nat_keepalive duration, 0 = off (20s)
//	transport.raw_esp_send socket | packet: raw ESP over IPv4 through an AF_PACKET
//	                socket where the next hop is known, bypassing nftables OUTPUT and
//	                POSTROUTING (socket)
//	sas[]                   one entry per SA pair (a roadwarrior needs one):
//	  name          [A-Za-z0-9_.-], unique among SAs and policies (required)
//	  transform     aes128gcm16 | aes256gcm16 | chacha20poly1305 (aes256gcm16)
//	  esn           true | false (true)
//	  replay_window 1024-1048576 (1024)
//	  encap         esp | udp (esp)
//	  peer_port     with encap udp only (4500)
//	  outbound, inbound  {spi: >= 256, hex 0x... or decimal; and
//	                key: "0x<hex>" (cipher key and 4-byte salt) or
//	                key_file: path (mode 0600; hex or raw bytes;
//	                relative to the config file)} (required; inbound
//	                SPIs unique)
//	  local_addrs   address set: our outer addresses for this SA (any)
//	  peer_addrs    address set: the peer's addresses or pools (any)
//	  outer         {mode: host} | {mode: gateway-gateway, local: addr, peer: addr}
//	                | {mode: road-warrior, gateway: addrs}
//	                | {mode: gateway-to-road-warrior, local: addrs}
//	                (required; addrs: one per family the selector carries)
//	  selector      tunnel.ParseSelector text from this host's view (required)
//	  lifetimes     {soft: LIMIT, hard: LIMIT}, LIMIT {time: duration,
//	                bytes: n, packets: n}, 0 = none; soft below hard
//	policies[]      extra SPD entries, before the SAs' own:
//	  name          unique (required)
//	  action        bypass | discard | protect (required)
//	  selector      (required)
//	  sa            with protect only: the sas entry carrying it (required
//	                then); the selector must lie within the SA's
//
// An address set is a list of addresses and prefixes, or one
// comma-separated string, or "any". Numbers are decimal, or hex with 0x.
// Durations are Go durations (20s, 50m, 1h30m).
//
// # Checks across fields
//
// Inbound SPIs are unique; no key is used twice; key lengths match the
// transform; an outer mode has its addresses, one per carried family, of
// one family for gateway-gateway; fixed outer sources and local_addrs are
// among transport.listen, and so is some inner source in the modes that
// send from it; a road warrior never uses gateway-to-road-warrior nor a
// gateway road-warrior; a route in the main table must not catch the
// ESP of an SA that sends to the inner destination (use tun.table and
// tun.bypass_rule); protect policies name an SA and stay within its
// selector; the TUN MTU stays >= 1280 when IPv6 goes through it.
package config
