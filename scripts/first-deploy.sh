#!/usr/bin/env bash
# The first `pulumi up` of a stack, in the order a new platform needs (README: "Deploying for real"):
#
#   1. the offline policy check;
#   2. the platform, with the Kubernetes API opened to this machine's public address for this run only, images
#      built and pushed by Pulumi (the ECR repositories do not exist before this `up`), and the model services
#      not awaited (no model is registered yet: the servers start unready and keep retrying the load);
#   3. the first model: the training job runs (a CronJob is started once by hand), then `mlplat promote`
#      through a port-forward to MLflow points the services' alias at it;
#   4. the services turn ready by themselves; the stack file is restored (API private again, rollouts awaited),
#      and the deploy workflow applies it from the stack's self-hosted runner inside the new VPC (this machine
#      would lose the API halfway through that update).
#
# Needs: AWS credentials, `pulumi login` to the state backend, Docker, kubectl, curl, and ./scripts/setup.sh.
# Usage: scripts/first-deploy.sh STACK [--model NAME] [--dry-run]   (--dry-run prints the commands only)
set -euo pipefail
cd "$(dirname "$0")/.."

stack="${1:?usage: scripts/first-deploy.sh STACK [--model NAME] [--dry-run]}"
shift
model=digits
dry_run=false
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --dry-run) dry_run=true; shift ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
stack_file="Pulumi.${stack}.yaml"
[ -f "$stack_file" ] || { echo "no $stack_file" >&2; exit 2; }
python=.venv/bin/python
mlplat=.venv/bin/mlplat

run() {
  echo "+ $*"
  if [ "$dry_run" = false ]; then "$@"; fi
}

# What the stack declares, read through mlplat's own config (environment defaults applied).
read_config() {
  "$python" - "$stack" "$1" <<'PY'
import sys
from pathlib import Path
from mlplat.infra.config import load
from mlplat.infra.stacks import load_stack
files = load_stack(Path("."), sys.argv[1])
cfg = load({k: v for k, v in files.config.items() if k.startswith("mlplat:") or k == "aws:region"})
if sys.argv[2] == "services":
    print(" ".join(cfg.services))
elif sys.argv[2] == "jobs":
    print(" ".join(f"{name}:{'cron' if job.schedule else 'job'}" for name, job in cfg.training_jobs.items()))
PY
}

services=$(read_config services)
jobs=$(read_config jobs)
namespace_prefix="mlplat-${stack}"

echo "== 1. offline policy check"
run "$mlplat" check "$stack"

echo "== 2. platform (API open to this machine for this run; images built by Pulumi; services not awaited)"
work=$(mktemp -d)  # the stack file's backup and the cluster's kubeconfig (credentials): removed on exit
backup="$work/$(basename "$stack_file")"
cp "$stack_file" "$backup"
restore() { cp "$backup" "$stack_file"; rm -rf "$work"; }
trap restore EXIT
my_ip=$(if [ "$dry_run" = true ]; then echo "<this machine's public IP>"; else curl -fsS https://checkip.amazonaws.com; fi)
run pulumi stack select "$stack"
run pulumi config set --path 'mlplat:cluster.endpointPublicAccess' true
run pulumi config set --path 'mlplat:cluster.publicAccessCidrs[0]' "${my_ip}/32"
run pulumi config set --path 'mlplat:registry.buildImages' true
for svc in $services; do
  run pulumi config set --path "mlplat:services.${svc}.awaitReady" false
done
run pulumi up --yes --skip-preview
kubeconfig="$work/kubeconfig"
run sh -c "pulumi stack output kubeconfig --show-secrets > '$kubeconfig'"
export KUBECONFIG="$kubeconfig"

echo "== 3. first model: train, then promote"
for entry in $jobs; do
  job="${entry%%:*}"
  name="${namespace_prefix}-${job}"
  if [ "${entry##*:}" = cron ]; then
    run kubectl -n training create job "${name}-first" --from="cronjob/${name}"
    name="${name}-first"
  fi
  run kubectl -n training wait --for=condition=complete --timeout=3h "job/${name}"
done
run sh -c "kubectl -n mlflow port-forward svc/mlflow 5000:5000 >/dev/null 2>&1 & echo \$! > .mlplat-port-forward.pid"
run sleep 5
# MLflow lets only its writers move an alias: promote as the pipeline identity, its password read from the
# stack's Secret into the environment (never printed, never in argv).
echo "+ export MLFLOW_TRACKING_USERNAME=pipeline MLFLOW_TRACKING_PASSWORD=<Secret mlflow/mlflow-user-pipeline>"
if [ "$dry_run" = false ]; then
  MLFLOW_TRACKING_PASSWORD=$(kubectl -n mlflow get secret mlflow-user-pipeline -o jsonpath='{.data.password}' \
    | base64 -d)
  export MLFLOW_TRACKING_USERNAME=pipeline MLFLOW_TRACKING_PASSWORD
fi
run "$mlplat" promote "$model" --from staging --to champion --tracking-uri http://127.0.0.1:5000
run sh -c 'kill "$(cat .mlplat-port-forward.pid)"; rm -f .mlplat-port-forward.pid'

echo "== 4. services ready; the stack file as committed is applied by CI from inside the VPC"
for svc in $services; do
  run kubectl -n serving rollout status "deployment/${namespace_prefix}-${svc}-stable" --timeout=15m
done
restore
trap - EXIT
cat <<MSG
First deploy of ${stack} done. Register a self-hosted GitHub Actions runner with the labels $("$mlplat" runner "$stack")
in the stack's private subnets (pulumi stack output privateSubnetIds), then run the deploy workflow, which closes
the API endpoint again and awaits every rollout from then on:  gh workflow run deploy.yml
MSG
