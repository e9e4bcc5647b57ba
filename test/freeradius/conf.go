package freeradius

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// write lays out the configuration directory: one radiusd.conf with the
// modules inline (files, mschap, eap, detail) and one virtual server.
func (s *Server) write(cfg Config) error {
	d := s.dir
	files := map[string]string{
		"radiusd.conf": radiusdConf(d, cfg),
		"users":        usersFile(cfg.Users),
		"dictionary":   "",
	}
	if cfg.TLS != nil {
		files["server.pem"] = string(cfg.TLS.CertPEM)
		files["server.key"] = string(cfg.TLS.KeyPEM)
		files["ca.pem"] = string(cfg.TLS.CAPEM)
	}
	for _, sub := range []string{"log", "run", "tlscache"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o700); err != nil {
			return err
		}
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(d, name), []byte(body), 0o600); err != nil {
			return err
		}
	}
	return nil
}

func usersFile(users []User) string {
	var b strings.Builder
	for _, u := range users {
		fmt.Fprintf(&b, "%q Cleartext-Password := %q\n", u.Name, u.Password)
		for i, r := range u.Reply {
			sep := ","
			if i == len(u.Reply)-1 {
				sep = ""
			}
			fmt.Fprintf(&b, "\t%s%s\n", r, sep)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func radiusdConf(d string, cfg Config) string {
	eapTypes := ""
	if cfg.TLS != nil {
		eapTypes = fmt.Sprintf(`
		tls-config tls-common {
			private_key_file = %[1]s/server.key
			certificate_file = %[1]s/server.pem
			ca_file = %[1]s/ca.pem
			ca_path = %[1]s
			cipher_list = "DEFAULT"
			tls_min_version = "1.2"
			tls_max_version = "1.2"
			cache {
				enable = no
			}
			verify {
			}
		}
		tls {
			tls = tls-common
		}`, d)
	}
	return fmt.Sprintf(`prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = %[1]s/log
raddbdir = %[1]s
radacctdir = %[1]s
name = radiusd
confdir = %[1]s
modconfdir = %[1]s
certdir = %[1]s
cadir = %[1]s
run_dir = %[1]s/run
db_dir = %[1]s
libdir = /usr/lib/freeradius
pidfile = %[1]s/run/radiusd.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 1024
hostname_lookups = no
log {
	destination = stdout
	colourise = no
	file = %[1]s/log/radius.log
	syslog_facility = daemon
	stripped_names = no
	auth = yes
}
checkrad = /usr/sbin/checkrad
security {
	allow_core_dumps = no
	max_attributes = 200
	reject_delay = 0
	status_server = no
	allow_vulnerable_openssl = yes
}
thread pool {
	start_servers = 2
	max_servers = 4
	min_spare_servers = 1
	max_spare_servers = 4
	max_requests_per_server = 0
}
client gateway {
	ipaddr = %[2]s
	secret = %[3]q
	require_message_authenticator = yes
	nas_type = other
}
modules {
	files {
		filename = %[1]s/users
		usersfile = %[1]s/users
		acctusersfile = %[1]s/users
	}
	mschap {
		use_mppe = yes
		require_encryption = yes
		require_strong = yes
	}
	eap {
		default_eap_type = mschapv2
		timer_expire = 60
		ignore_unknown_eap_types = no
		max_sessions = 1024
		mschapv2 {
			send_error = no
		}%[4]s
	}
	detail {
		filename = %[1]s/detail
		escape_filenames = no
		permissions = 0600
		header = "%%t"
	}
	always ok {
		rcode = ok
	}
}
instantiate {
}
policy {
}
server default {
	listen {
		type = auth
		ipaddr = %[5]s
		port = 1812
	}
	listen {
		type = acct
		ipaddr = %[5]s
		port = 1813
	}
	authorize {
		eap {
			ok = return
		}
		files
	}
	authenticate {
		Auth-Type MS-CHAP {
			mschap
		}
		eap
	}
	preacct {
	}
	accounting {
		detail
		ok
	}
	post-auth {
		Post-Auth-Type REJECT {
			eap
		}
	}
}
`, d, cfg.Client, cfg.Secret, eapTypes, cfg.Listen)
}
