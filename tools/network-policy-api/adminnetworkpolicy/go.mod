// The CustomResourceDefinitions of the network policy API's AdminNetworkPolicy (v1alpha1), pinned and
// checksummed: the e2e tests install them into the local control plane (the Admin-tier metadata block).
// Nothing is built from this module; `go mod download` fetches the pinned source.
module baseline.dev/tools/network-policy-api/adminnetworkpolicy

go 1.24

require sigs.k8s.io/network-policy-api v0.1.7
