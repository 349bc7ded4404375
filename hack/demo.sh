#!/usr/bin/env bash
# `make demo`: on the running local control plane, install the CRD and the sample baselines, create a few
# namespaces, then run the operator in the foreground (Ctrl-C stops it; `make cluster-down` stops the cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
export KUBECONFIG=$PWD/.dev/kubeconfig
kubectl=$PWD/.dev/bin/kubectl
echo "==> installing the SecurityBaseline CRD"
$kubectl apply --server-side -f crds/securitybaseline.yaml
$kubectl wait --for=condition=Established crd/securitybaselines.baseline.dev --timeout=60s
# The operator's own namespace: never selected, and where it publishes the label keys admission protection reads.
$kubectl create namespace baseline-system --dry-run=client -o yaml | $kubectl apply -f -
echo "==> demo namespaces and sample baselines (manifests/samples/)"
$kubectl apply -f manifests/samples/demo-namespaces.yaml
$kubectl apply -f manifests/samples/org-baseline.yaml -f manifests/samples/team-quota.yaml
cat <<MSG

==> starting the operator. In another terminal:

      export KUBECONFIG=$KUBECONFIG PATH=$PWD/.dev/bin:\$PATH
      kubectl get securitybaselines          # Mode, Matched, Compliant, Drifted, Ready
      kubectl get networkpolicy,limitrange,resourcequota,rolebinding -n payments -l app.kubernetes.io/managed-by=baseline-operator
      kubectl describe securitybaseline payments-quota    # Audit mode: what it would change
      kubectl delete networkpolicy baseline-default-deny -n payments   # drift: watch it come back

    Ctrl-C stops the operator; \`make cluster-down\` stops the control plane.

MSG
exec "$PWD/.venv/bin/baseline-operator" run --operator-namespace baseline-system \
  --liveness "http://127.0.0.1:${BASELINE_DEMO_LIVENESS_PORT:-8081}/healthz"
