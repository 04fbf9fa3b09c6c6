# Coffer build, test and demo entry points. See README.md.
SHELL := /bin/bash
GO ?= go
BUILD := $(CURDIR)/build
BIN := $(BUILD)/bin
GUEST := $(BUILD)/guest
CACHE := $(BUILD)/cache
export PATH := $(BIN):$(PATH)

# Debian packages the build, the tests and the demo need.
# containernetworking-plugins puts the CNI plugins (bridge, loopback,
# host-local, ...) in $(CNI_BIN_DIR), for the CRI tests.
APT_PACKAGES := qemu-system-x86 runc busybox-static protobuf-compiler ca-certificates containernetworking-plugins
CNI_BIN_DIR := /usr/lib/cni

# Pinned third-party tools, built from tools/go.mod (tool directives).
TOOLS := containerd ctr containerd-shim-runc-v2 crictl registry protoc-gen-go protoc-gen-go-ttrpc
TOOL_PKG_containerd := github.com/containerd/containerd/v2/cmd/containerd
TOOL_PKG_ctr := github.com/containerd/containerd/v2/cmd/ctr
TOOL_PKG_containerd-shim-runc-v2 := github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2
TOOL_PKG_crictl := sigs.k8s.io/cri-tools/cmd/crictl
TOOL_PKG_registry := github.com/distribution/distribution/v3/cmd/registry
TOOL_PKG_protoc-gen-go := google.golang.org/protobuf/cmd/protoc-gen-go
TOOL_PKG_protoc-gen-go-ttrpc := github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc

GO_SOURCES := $(shell find . -name '*.go' -not -path './build/*' -not -path './tools/*') go.mod go.sum

.PHONY: all deps tools build guest generate test test-unit test-integration demo bench clean

all: build guest

## deps: install the Debian packages Coffer needs (root; skipped when present).
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

## tools: build the pinned containerd, ctr, runc shim, crictl, registry and protoc plugins.
tools: $(addprefix $(BIN)/,$(TOOLS))

$(BIN)/%: tools/go.mod tools/go.sum
	@mkdir -p $(BIN)
	cd tools && $(GO) build -o $@ $(TOOL_PKG_$*)

## build: build Coffer's binaries.
build: $(BIN)/containerd-shim-cc-v2 $(BIN)/ccctl $(BIN)/cc-agent $(BIN)/cc-snapshotter $(BIN)/cc-kbs

$(BIN)/containerd-shim-cc-v2: $(GO_SOURCES)
	$(GO) build -trimpath -o $@ ./cmd/containerd-shim-cc-v2

$(BIN)/cc-snapshotter: $(GO_SOURCES)
	$(GO) build -trimpath -o $@ ./cmd/cc-snapshotter

$(BIN)/cc-kbs: $(GO_SOURCES)
	$(GO) build -trimpath -o $@ ./cmd/cc-kbs

$(BIN)/ccctl: $(GO_SOURCES)
	$(GO) build -trimpath -o $@ ./cmd/ccctl

# The agent is PID 1 in the guest: static, stripped, reproducible.
$(BIN)/cc-agent: $(GO_SOURCES)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w -buildid=' -o $@ ./cmd/cc-agent

## guest: build the guest kernel + initramfs into build/guest.
guest: $(GUEST)/manifest.json

# The kernel .deb comes from apt: refresh apt's lists once if they lack the
# pinned version (a fresh machine has none).
$(GUEST)/manifest.json: $(BIN)/cc-agent $(BIN)/ccctl
	$(BIN)/ccctl guest build --out $(GUEST) --cache $(CACHE) --agent $(BIN)/cc-agent || \
		{ echo "retrying after apt-get update"; apt-get update -qq && \
		  $(BIN)/ccctl guest build --out $(GUEST) --cache $(CACHE) --agent $(BIN)/cc-agent; }

## generate: regenerate api/agent/v1 and api/events/v1 from their .proto files with the pinned plugins.
generate: $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-ttrpc
	protoc -I api/agent/v1 -I /usr/include \
		--go_out=paths=source_relative:api/agent/v1 \
		--go-ttrpc_out=paths=source_relative,prefix=TTRPC:api/agent/v1 \
		api/agent/v1/agent.proto
	protoc -I api/events/v1 --go_out=paths=source_relative:api/events/v1 api/events/v1/events.proto

## test: unit and end-to-end tests (containerd + registry + QEMU), then a
## bounded run of every fuzz target (FUZZ_TIME seconds each, default 10).
test: deps tools build guest
	$(GO) vet ./...
	COFFER_REQUIRE_E2E=1 $(GO) test -count=1 -timeout 40m ./...
	FUZZ_TIME=$${FUZZ_TIME:-10} bash scripts/fuzz.sh

test-unit:
	$(GO) test -count=1 -short ./...

## test-integration: the end-to-end tests; VMM=cloud-hypervisor runs them on
## Cloud Hypervisor (skipped, not failed, when its binary is absent).
VMM ?= qemu
test-integration: deps tools build guest
ifeq ($(VMM),qemu)
	COFFER_REQUIRE_E2E=1 $(GO) test -count=1 -timeout 40m -v ./integration/...
else
	COFFER_VMM=$(VMM) $(GO) test -count=1 -timeout 40m -v ./integration/...
	COFFER_GUEST_DIR=$(CURDIR)/build/guest $(GO) test -count=1 -v -run TestRealCloudHypervisor ./vmm/cloudhypervisor/
endif

## demo: run a confidential container end to end in a scratch directory.
demo: deps tools build guest
	bash scripts/demo.sh

## bench: print the performance figures recorded in docs/performance.md.
bench: deps tools build guest
	bash scripts/bench.sh

clean:
	rm -rf $(BUILD)
