package config

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"go.yaml.in/yaml/v3"
)

// maxConfigFile bounds what ControlSocketOf reads.
const maxConfigFile = 1 << 20

// ControlSocketOf reads only the top-level role and control_socket of a
// config file: what status and sa list need to reach the daemon. It loads
// no credential and validates nothing else, so a control_group member can
// use it on a configuration whose key files are root's (0600).
func ControlSocketOf(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigFile))
	if err != nil {
		return "", fmt.Errorf("config: %w", err)
	}
	defer clear(data) // it may hold inline keys
	return controlSocketOf(path, data)
}

func controlSocketOf(path string, data []byte) (sock string, err error) {
	defer func() {
		if r := recover(); r != nil { // the YAML library must not take the CLI down
			sock, err = "", &FieldError{File: path, Msg: "YAML parser failed on this file"}
		}
	}()
	var top struct {
		Role          string    `yaml:"role"`
		ControlSocket yaml.Node `yaml:"control_socket"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&top); err != nil {
		return "", &FieldError{File: path, Msg: "invalid YAML: " + redact(err.Error())}
	}
	sock = "/run/roamsec/" + top.Role + ".sock"
	switch {
	case top.ControlSocket.Kind == yaml.ScalarNode:
		sock = top.ControlSocket.Value
		if !filepath.IsAbs(sock) {
			return "", &FieldError{File: path, Line: top.ControlSocket.Line, Path: "control_socket", Msg: "want an absolute path, got " + show(sock)}
		}
	case top.ControlSocket.Kind != 0:
		return "", &FieldError{File: path, Line: top.ControlSocket.Line, Path: "control_socket", Msg: "want an absolute path"}
	case top.Role != string(RoleGateway) && top.Role != string(RoleRoadWarrior):
		return "", &FieldError{File: path, Path: "role", Msg: "want gateway or roadwarrior, got " + show(top.Role)}
	}
	return sock, nil
}
