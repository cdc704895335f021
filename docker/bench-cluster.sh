#!/usr/bin/env bash
# Runs `flotilla bench` against a cluster whose nodes each have their own CPU
# budget, as on separate machines: every node is a container limited to
# CPUS cores (a CFS quota), on a private bridge network, and the
# load generator runs on the host.
#
#   docker/bench-cluster.sh [--nodes N] [--cpus CPUS] [--binary PATH] \
#       [--server-arg ARG]... -- BENCH_ARGS...
#
# --nodes N         cluster size (default 3)
# --cpus CPUS       cores each node may use (default 0.4)
# --binary PATH     the flotilla binary for the nodes and the bench (default:
#                   the release build, built when missing)
# --server-arg ARG  one more argument for every `flotilla server` (repeatable)
# BENCH_ARGS        passed to `flotilla bench`; `--endpoints` is filled in
#
# Each node runs one unpinned shard. The cluster is fresh for every call and
# is removed on exit (also on failure or Ctrl-C); node data lives in a
# temporary directory on the host.
set -euo pipefail

nodes=3
cpus=0.4
binary=""
server_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) nodes="$2"; shift 2 ;;
    --cpus) cpus="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    --server-arg) server_args+=("$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "bench-cluster.sh: unknown option $1 (bench arguments go after --)" >&2; exit 2 ;;
  esac
done
bench_args=("$@")

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "$binary" ]]; then
  (cd "$repo" && cargo build --release -p kvserver --bin flotilla)
  binary="${CARGO_TARGET_DIR:-$repo/target}/release/flotilla"
fi
tag="flotilla:bench"
"$repo/docker/build-image.sh" "$binary" "$tag"

run="flotilla-bench-$$"
data_root="$(mktemp -d)"
cleanup() {
  docker ps --all --quiet --filter "label=org.flotilla.bench=$run" | xargs -r docker rm --force >/dev/null
  docker network rm "$run" >/dev/null 2>&1 || true
  rm -rf "$data_root"
}
trap cleanup EXIT

# A /24 of 172.30.0.0/16 that no other network uses.
subnet=""
for attempt in $(seq 0 255); do
  candidate=$(( ($$ + attempt) % 256 ))
  if docker network create --driver bridge --subnet "172.30.$candidate.0/24" \
      --label "org.flotilla.bench=$run" "$run" >/dev/null 2>&1; then
    subnet="$candidate"
    break
  fi
done
if [[ -z "$subnet" ]]; then
  echo "bench-cluster.sh: no free /24 in 172.30.0.0/16 for the network" >&2
  exit 1
fi

# The CPU budget as a CFS quota per 10 ms period rather than `--cpus`'s
# 100 ms: a node that spends its budget early waits at most 10 ms, not 100.
CPU_PERIOD_US=10000
cpu_quota="$(awk -v cpus="$cpus" -v period="$CPU_PERIOD_US" 'BEGIN { printf "%d", cpus * period }')"

# io_uring needs locked memory: as much as this shell may lock (bytes).
memlock="$(ulimit -H -l)"
[[ "$memlock" == unlimited ]] && memlock=-1 || memlock=$((memlock * 1024))

ip_of() { echo "172.30.$subnet.$((10 + $1))"; }
initial_cluster=""
endpoints=""
for id in $(seq 1 "$nodes"); do
  initial_cluster+="${initial_cluster:+,}$id=$(ip_of "$id"):2380"
  endpoints+="${endpoints:+,}$(ip_of "$id"):20160"
done

for id in $(seq 1 "$nodes"); do
  mkdir -p "$data_root/node-$id"
  docker run --detach --name "$run-n$id" --label "org.flotilla.bench=$run" \
    --network "$run" --ip "$(ip_of "$id")" \
    --cpu-period "$CPU_PERIOD_US" --cpu-quota "$cpu_quota" \
    --security-opt seccomp=unconfined --ulimit "memlock=$memlock:$memlock" \
    --volume "$data_root/node-$id:/data" "$tag" \
    server --id "$id" --initial-cluster "$initial_cluster" \
    --client-addr "$(ip_of "$id"):20160" --data-dir /data --shards 1 --no-pin \
    "${server_args[@]}" >/dev/null
done

# Every node prints its ready line once it serves.
deadline=$((SECONDS + 60))
for id in $(seq 1 "$nodes"); do
  until docker logs "$run-n$id" 2>/dev/null | grep -q "flotilla server ready"; do
    if (( SECONDS >= deadline )); then
      echo "bench-cluster.sh: node $id did not print its ready line within 60 s:" >&2
      docker logs --tail 20 "$run-n$id" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
done

echo "cluster: $nodes nodes, $cpus cores each, endpoints $endpoints"
"$binary" bench --endpoints "$endpoints" "${bench_args[@]}"
