// Command gateway is the roamsec gateway daemon; see -help.
package main

import (
	"os"

	"github.com/roamsec/roamsec/internal/daemon"
	"github.com/roamsec/roamsec/internal/enroll"
	"github.com/roamsec/roamsec/internal/etcdkv"
)

func main() {
	// Only the gateway keeps one-time keys in etcd (ike.one_time.etcd,
	// enroll -etcd): etcd's client is linked here, not in the road warrior.
	enroll.EtcdDialer = dialEtcd
	os.Exit(daemon.Main("gateway", os.Args[1:], os.Stdout, os.Stderr))
}

func dialEtcd(c enroll.EtcdConfig) (enroll.EtcdKV, error) {
	kv, err := etcdkv.Open(etcdkv.Config{Endpoints: c.Endpoints, CAFile: c.CAFile, CertFile: c.CertFile, KeyFile: c.KeyFile, DialTimeout: c.Timeout, Dial: c.Dial})
	if err != nil {
		return nil, err // not a nil *KV in a non-nil interface
	}
	return kv, nil
}
