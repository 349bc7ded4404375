// The CustomResourceDefinition of the network policy API's ClusterNetworkPolicy (v1alpha2, tier Admin),
// pinned and checksummed: the e2e tests install it into the local control plane (the Admin-tier metadata
// block). Nothing is built from this module; `go mod download` fetches the pinned source.
module baseline.dev/tools/network-policy-api/clusternetworkpolicy

go 1.24

require sigs.k8s.io/network-policy-api v0.3.0
