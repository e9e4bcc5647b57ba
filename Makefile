# roamsec — the two commands of the README are `make demo` and `make test`.
# Both run as root on a fresh Debian 12 machine and install what they need.
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
# A count, not a duration: with a duration Go 1.26's fuzz coordinator can
# report its own deadline as a failure (golang/go#75804, fixed in 1.27).
FUZZTIME ?= 20000x

.PHONY: deps demo test fuzz bench bench-esp bench-ike bench-otk bench-flood bench-failover bench-reconnect bench-matrix bench-strongswan bench-outer bench-scale bench-eap bench-ha bench-mobike bench-crash deb docker build vet

deps:
	@bash scripts/deps.sh

build: deps
	$(GO) build ./...

vet: deps
	$(GO) vet ./...
	$(GO) -C packaging vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# The main job, shown.
demo: deps
	$(GO) run ./test/demo

# Every test: unit, known-answer, tshark, network-namespace end-to-end
# (needs root), with the race detector; the packaging module's (packaging/
# is a module of its own, so nfpm's tree stays out of the daemons' go.mod);
# then a short run of every fuzz target.
test: deps vet
	$(GO) test -race -count=1 -timeout 30m ./...
	$(GO) -C packaging test -count=1 -timeout 30m ./...
	$(MAKE) --no-print-directory fuzz

fuzz: deps
	@set -e; for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/func //'); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test $$pkg -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) >/tmp/roamsec-fuzz.log 2>&1 || { cat /tmp/roamsec-fuzz.log; exit 1; }; \
	  done; \
	done

# Throughput side by side on one test bed: bare veth, roamsec, wireguard-go.
bench: deps
	bash scripts/bench.sh

# Failover timings: path death to traffic on the secondary, and back.
bench-failover: deps
	$(GO) run ./test/failbench -trials 10

# Established TCP to the road warrior's primary address across a gateway-side
# silent drop (RFC 3554 mode, IKEv2): the stall, median of 5.
bench-outer: deps
	ROAMSEC_OUTER_TRIALS=5 $(GO) test ./test/e2e/ -count=1 -v -run '^TestOuterTCPToPrimarySurvivesGatewaySideDrop$$'

# The same failover measurement with strongSwan (DPD + MOBIKE, kernel-libipsec).
bench-strongswan: deps
	bash scripts/deps-strongswan.sh
	$(GO) run ./test/swanbench -trials 10

# Debian packages into dist/, checked with lintian and systemd-analyze.
deb: deps
	bash scripts/deb.sh -check

# The gateway's container image (OCI archive in dist/), built with buildah: no Docker engine.
docker: deps
	bash scripts/docker.sh

# Outages after faults longer than DPD (IKEv2 reconnect) and IKEv2 virtual-mode failover: median of 5.
bench-reconnect: deps
	ROAMSEC_BENCH_RECONNECT=5 ROAMSEC_BENCH_VIRTUAL=5 $(GO) test -count=1 -v -timeout 30m -run 'TestReconnectAfterLongOutage|TestVirtualIKEFailover' ./test/e2e

# Issue 10's MOBIKE matrix: a strongSwan road warrior roaming (link down, address
# change, NAT rebinding, a move during a Child SA rekey; virtual address, RFC 3554,
# behind a NAT), 5 trials per cell on our gateway and on a strongSwan gateway in the
# same bed; the table of median outages is the last thing printed.
bench-mobike: deps
	ROAMSEC_MOBIKE_TRIALS=5 $(GO) test -count=1 -v -timeout 40m -run '^TestStrongSwanMOBIKEMatrix$$' ./test/e2e

# The issue 16 failover matrix (IKEv2, both modes, every cell: silent drop either side, one way, link down,
# lossy primary, both paths dead past DPD, gateway SIGKILL+restart, road-warrior SIGSTOP): a table per mode, 5 trials per cell.
bench-matrix: deps
	ROAMSEC_MATRIX_TRIALS=5 $(GO) test -count=1 -v -timeout 75m -run '^TestFailoverMatrix$$' ./test/e2e

# The load generator (test/loadgen) against the gateway daemon: handshakes/s on
# 1 and 2 cores, time to bring up SCALE_N road warriors, RSS per road warrior,
# traffic over all SAs vs one, idle CPU under DPD. Reports, does not assert.
SCALE_N ?= 10000
bench-scale: deps
	$(GO) run ./test/loadgen/cmd/benchscale -n $(SCALE_N)

# EAP-MSCHAPv2 through FreeRADIUS against PSK, the same strongSwan road warrior
# and gateway in one run: connect time and sequential handshakes per second.
bench-eap: deps
	bash scripts/deps-strongswan.sh
	ROAMSEC_BENCH_EAP=$(or $(EAP_N),50) $(GO) test -count=1 -v -timeout 20m -run '^TestEAPBench$$' ./test/e2e

# IKEv2 handshakes per second and gateway memory per tunnel.
bench-ike: deps
	$(GO) test ./ike/ -run '^$$' -bench . -benchtime 2s

# One-time keys: connect -one-time to traffic (median of 9, namespaces), the
# Host's issue and admission costs, the gateway's IKE share of a handshake.
bench-otk: deps
	ROAMSEC_BENCH_OTK=9 $(GO) test ./test/e2e/ -count=1 -run '^TestOneTimeConnectTime$$' -v | grep -E 'median|ok|FAIL'
	$(GO) test ./internal/enroll/ -run '^$$' -bench . -benchtime 200x
	$(GO) test ./ike/ -run '^$$' -bench 'Handshake' -benchtime 2s

# The gateway's IKE side under issue 11's full-scale floods (spoofed 20,000/s,
# cookie-answering 3,000/s, largest fragments, IKE on UDP 4500 under iperf3),
# next to the same run with one peer and no attack.
bench-flood: deps
	$(GO) run ./test/floodbench

# The HA pair (issue 12): outage after kill -9 of the active (first answered
# 100 Hz echo through the standby), median of 10, 50 ms heartbeats; sync bytes
# per established road warrior; and the row without HA: the same kill with the
# strongSwan road warrior renegotiating after its DPD with a cold gateway.
bench-ha: deps
	HA_OUTAGE_TRIALS=10 HA_NOHA_TRIALS=10 HA_SWAN_TRIALS=10 $(GO) test -count=1 -v -timeout 30m -run '^(TestHAOutageBench|TestHANoHASwanBench|TestHASwanIperfBench)$$' ./test/e2e

# Crash safety (issue 15): SIGKILL at random moments (start-up, connected,
# during a rekey, during a failover) of the road warrior (40 times) and the
# gateway (12 restarts), each restart timed to traffic; make test runs 8 and 3.
bench-crash: deps
	ROAMSEC_CRASH_KILLS=40 ROAMSEC_CRASH_GATEWAY_KILLS=12 $(GO) test -count=1 -v -timeout 30m -run '^TestSIGKILLAtRandomMomentsThenServe$$' ./test/e2e

# Go benchmarks of the ESP core (figures in the issue notes come from here).
bench-esp: deps
	$(GO) test ./tunnel/ -run '^$$' -bench . -benchtime 1s
