// Package etcdkv is the little of etcd's client that the one-time keys'
// etcd Host (internal/enroll.EtcdHost) uses, behind enroll.EtcdKV. It is
// its own package so that only the gateway links etcd's client, gRPC,
// protobuf and zap: internal/enroll (which the road warrior links through
// internal/daemon) does not import it; cmd/gateway's main sets
// enroll.EtcdDialer to a function that calls Open.
package etcdkv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// Config is where etcd is and how to reach it.
type Config struct {
	Endpoints                 []string
	CAFile, CertFile, KeyFile string        // TLS, all optional
	DialTimeout               time.Duration // 0: 5 s
	// Dial, if set, makes the connections (tests: inside a network
	// namespace).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// KV is a connected client.
type KV struct{ cli *clientv3.Client }

// Open connects lazily: a server that is down is an error of the first
// operation, not of Open.
func Open(c Config) (*KV, error) {
	if len(c.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints")
	}
	var tc *tls.Config
	if c.CAFile != "" || c.CertFile != "" {
		var err error
		info := transport.TLSInfo{CertFile: c.CertFile, KeyFile: c.KeyFile, TrustedCAFile: c.CAFile}
		if tc, err = info.ClientConfig(); err != nil {
			return nil, fmt.Errorf("etcd TLS: %w", err)
		}
	}
	timeout := c.DialTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	cc := clientv3.Config{Endpoints: c.Endpoints, TLS: tc, DialTimeout: timeout, Logger: zap.NewNop()}
	if c.Dial != nil {
		cc.DialOptions = []grpc.DialOption{grpc.WithContextDialer(c.Dial)}
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", strings.Join(c.Endpoints, ","), err)
	}
	return &KV{cli: cli}, nil
}

// Close closes the client.
func (k *KV) Close() error { return k.cli.Close() }

// CreateAll puts every key with its value in one transaction, only if
// none of the keys exists (CreateRevision 0); false: one did, nothing
// was written.
func (k *KV) CreateAll(ctx context.Context, keys, values []string) (bool, error) {
	cmps := make([]clientv3.Cmp, len(keys))
	puts := make([]clientv3.Op, len(keys))
	for i := range keys {
		cmps[i] = clientv3.Compare(clientv3.CreateRevision(keys[i]), "=", 0)
		puts[i] = clientv3.OpPut(keys[i], values[i])
	}
	resp, err := k.cli.Txn(ctx).If(cmps...).Then(puts...).Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

// Delete deletes key.
func (k *KV) Delete(ctx context.Context, key string) error {
	_, err := k.cli.Delete(ctx, key)
	return err
}

// Get is key's value and ModRevision; found is false if there is none.
func (k *KV) Get(ctx context.Context, key string) (value []byte, rev int64, found bool, err error) {
	resp, err := k.cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) == 0 {
		return nil, 0, false, err
	}
	return resp.Kvs[0].Value, resp.Kvs[0].ModRevision, true, nil
}

// PutIfRevision writes value over key if its ModRevision is still rev
// (etcd's compare-and-swap); false: it changed.
func (k *KV) PutIfRevision(ctx context.Context, key, value string, rev int64) (bool, error) {
	resp, err := k.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(clientv3.OpPut(key, value)).Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

// List is every key under prefix with its value and ModRevision, by key.
func (k *KV) List(ctx context.Context, prefix string) (keys, values [][]byte, revs []int64, err error) {
	resp, err := k.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, nil, nil, err
	}
	for _, kv := range resp.Kvs {
		keys, values, revs = append(keys, kv.Key), append(values, kv.Value), append(revs, kv.ModRevision)
	}
	return keys, values, revs, nil
}
