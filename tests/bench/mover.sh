#!/usr/bin/env bash
# Data mover benchmark (issue 20). About 1 GiB in three volumes — one large file (512 MiB), 10,000
# small files (~190 MiB), a database-like file (320 MiB) — all random (incompressible), to MinIO on
# loopback (plain HTTP), side by side in one run:
#   - this mover: `multicluster-webhook mover export|import`, the three volumes at once (as the hub
#     server runs a snapshot's volumes);
#   - restic (RESTIC_VERSION in tests/versions.env, built from the Go module proxy) backing up and
#     restoring the same three directories to the same MinIO;
#   - the floor: `tar` of the data to one upload with curl (SigV4), and one download piped to
#     `tar -x`.
# Each: first snapshot (s, MB/s, MB sent), restore into an empty directory (s, MB/s; every file's
# SHA-256 checked after the clock stops), second snapshot after a 5 % change (s, MB sent). The
# change: 500 of the small files rewritten, 25 MiB overwritten in the middle of the large file, and
# 4,096 random 4 KiB page writes inside four hot 4 MiB extents of the database file (writes
# scattered uniformly over a whole database would touch most 1 MiB chunks, for both tools).
# Rerun: tests/bench/mover.sh [WORKDIR]   (about 6 GiB free there; default a temporary directory)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD
# shellcheck source=../versions.env
source tests/versions.env
eval "$(tests/install-deps.sh | grep '^MINIO=')"
cache=${MULTICLUSTER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-multicluster}
restic_dir="$cache/restic/$RESTIC_VERSION"
if [[ ! -x $restic_dir/restic ]]; then
  echo "building restic $RESTIC_VERSION from the Go module proxy (about 3 min, once)" >&2
  mkdir -p "$restic_dir"
  GOBIN="$restic_dir" GOFLAGS=-mod=mod CGO_ENABLED=0 \
    go install -trimpath -ldflags "-s -w" "github.com/restic/restic/cmd/restic@$RESTIC_VERSION" >&2
fi
RESTIC=$restic_dir/restic
cargo build --quiet --release --locked -p multicluster-webhook
MOVER=$root/target/release/multicluster-webhook

work=${1:-$(mktemp -d)}
mkdir -p "$work"
minio_pid=
cleanup() {
  [[ -n $minio_pid ]] && kill "$minio_pid" 2>/dev/null && wait "$minio_pid" 2>/dev/null
  [[ -z ${1:-} ]] && rm -rf "$work"
  return 0
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc -l; }
mb() { echo "scale=1; $1 / 1000000" | bc -l; }
rate() { echo "scale=1; $1 / 1000000 / $2" | bc -l; }

# The volumes.
data=$work/data
echo "writing the data to $data" >&2
python3 - "$data" <<'EOF'
import os, random, sys
root = sys.argv[1]
random.seed(20)
for d in ("large", "small", "db"):
    os.makedirs(os.path.join(root, d), exist_ok=True)
def random_file(path, size):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 << 20)
            f.write(os.urandom(n))
            left -= n
random_file(os.path.join(root, "large", "video.bin"), 512 << 20)
for i in range(10000):
    sub = os.path.join(root, "small", f"{i // 1000:02d}")
    os.makedirs(sub, exist_ok=True)
    random_file(os.path.join(sub, f"{i}.dat"), random.randint(100, 40000))
random_file(os.path.join(root, "db", "data.db"), 320 << 20)
EOF
total=$(du -sb --apparent-size "$data" | cut -f1)
echo "$(mb "$total") MB in $(find "$data" -type f | wc -l) files" >&2

sums() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
sums "$data" >"$work/sums"

change() {
  python3 - "$data" <<'EOF'
import os, random, sys
root = sys.argv[1]
random.seed(5)
for i in random.sample(range(10000), 500):
    path = os.path.join(root, "small", f"{i // 1000:02d}", f"{i}.dat")
    size = os.path.getsize(path)
    with open(path, "wb") as f:
        f.write(os.urandom(size))
with open(os.path.join(root, "large", "video.bin"), "r+b") as f:
    f.seek(200 << 20)
    f.write(os.urandom(25 << 20))
db = os.path.join(root, "db", "data.db")
pages = os.path.getsize(db) // 4096
hot = [random.randrange(0, pages - 1024) for _ in range(4)]
with open(db, "r+b") as f:
    for _ in range(4096):
        f.seek((random.choice(hot) + random.randrange(1024)) * 4096)
        f.write(os.urandom(4096))
EOF
}

# MinIO on loopback, one bucket per tool.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/minio/mover" "$work/minio/restic" "$work/minio/floor"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret-key
MINIO_ROOT_USER=$AWS_ACCESS_KEY_ID MINIO_ROOT_PASSWORD=$AWS_SECRET_ACCESS_KEY \
  "$MINIO" server --quiet --address "127.0.0.1:$port" --console-address 127.0.0.1:0 \
  "$work/minio" >"$work/minio.log" 2>&1 &
minio_pid=$!
endpoint=http://127.0.0.1:$port
for _ in $(seq 100); do curl -sf "$endpoint/minio/health/ready" >/dev/null && break; sleep 0.2; done
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }

check() {
  local restored=$1 what=$2
  if ! diff -q <(sums "$restored") "$work/sums" >/dev/null; then
    echo "$what: the restored files differ from the source" >&2
    exit 1
  fi
}

# --- this mover -------------------------------------------------------------------------------
mover() {
  "$MOVER" mover --s3-bucket mover --s3-endpoint "$endpoint" --s3-path-style "$@"
}
# mover_export OUT [PARENT]: with PARENT (an earlier run's OUT), each volume's export gets its
# parent index, as the hub server passes the previous snapshot's.
mover_export() {
  local out=$1 parent=${2:-} pids=()
  for v in large small db; do
    local args=()
    [[ -n $parent ]] && args=(--parent "$(jq -r .indexDigest "$parent.$v")")
    mover export --source "$data/$v" "${args[@]}" >"$out.$v" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  local sent=0
  for v in large small db; do
    sent=$((sent + $(jq -r .bytesStored "$out.$v")))
  done
  echo "$sent"
}
drop_caches
t=$(now); m_sent1=$(mover_export "$work/mover-1"); m_t1=$(since "$t")
drop_caches
t=$(now)
pids=()
for v in large small db; do
  mkdir -p "$work/mover-restore/$v"
  mover import --target "$work/mover-restore/$v" --index "$(jq -r .indexDigest "$work/mover-1.$v")" >/dev/null &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
m_tr=$(since "$t")
check "$work/mover-restore" mover
rm -rf "$work/mover-restore"

# --- restic -----------------------------------------------------------------------------------
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=s3:$endpoint/restic
"$RESTIC" init --quiet >/dev/null
restic_backup() {
  (cd "$data" && "$RESTIC" backup --json large small db) | jq -s -r 'map(select(.message_type=="summary"))[0].data_added'
}
drop_caches
t=$(now); r_sent1=$(restic_backup); r_t1=$(since "$t")
drop_caches
t=$(now); "$RESTIC" restore latest --target "$work/restic-restore" >/dev/null; r_tr=$(since "$t")
check "$work/restic-restore" restic
rm -rf "$work/restic-restore"

# --- the floor: tar | one upload, one download | tar -x ---------------------------------------
# MinIO refuses a PUT without a length (411), so the archive goes through memory (/dev/shm) on its
# way: that copy is inside the floor's time.
floor_put() {
  local tarball; tarball=$(mktemp /dev/shm/mover-bench.XXXXXX)
  tar -C "$data" -cf "$tarball" .
  curl -sS --fail --aws-sigv4 "aws:amz:us-east-1:s3" \
    --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
    -T "$tarball" "$endpoint/floor/data.tar"
  rm -f "$tarball"
}
drop_caches
t=$(now); floor_put; f_t1=$(since "$t")
f_sent=$(du -sb "$work/minio/floor" | cut -f1)
drop_caches
mkdir -p "$work/floor-restore"
t=$(now)
curl -sS --fail --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
  "$endpoint/floor/data.tar" | tar -C "$work/floor-restore" -xf -
f_tr=$(since "$t")
check "$work/floor-restore" floor
rm -rf "$work/floor-restore"

# --- 5 % changed: second snapshots ------------------------------------------------------------
change
drop_caches
t=$(now); m_sent2=$(mover_export "$work/mover-2" "$work/mover-1"); m_t2=$(since "$t")
drop_caches
t=$(now); r_sent2=$(restic_backup); r_t2=$(since "$t")
drop_caches
t=$(now); floor_put; f_t2=$(since "$t")

printf '\n%s MB of file data (3 volumes); MinIO on loopback; %s\n\n' "$(mb "$total")" "$(date -u +%FT%TZ)"
printf '| | first snapshot | restore | after a 5 %% change |\n|---|---|---|---|\n'
printf '| this mover | %.1f s, %s MB/s, %s MB sent | %.1f s, %s MB/s | %.1f s, %s MB sent (%s %% of the first) |\n' \
  "$m_t1" "$(rate "$total" "$m_t1")" "$(mb "$m_sent1")" "$m_tr" "$(rate "$total" "$m_tr")" \
  "$m_t2" "$(mb "$m_sent2")" "$(echo "scale=1; 100 * $m_sent2 / $m_sent1" | bc -l)"
printf '| restic %s | %.1f s, %s MB/s, %s MB sent | %.1f s, %s MB/s | %.1f s, %s MB sent (%s %% of the first) |\n' \
  "$RESTIC_VERSION" "$r_t1" "$(rate "$total" "$r_t1")" "$(mb "$r_sent1")" "$r_tr" "$(rate "$total" "$r_tr")" \
  "$r_t2" "$(mb "$r_sent2")" "$(echo "scale=1; 100 * $r_sent2 / $r_sent1" | bc -l)"
printf '| floor (tar, one object) | %.1f s, %s MB/s, %s MB sent | %.1f s, %s MB/s | %.1f s, everything again |\n' \
  "$f_t1" "$(rate "$total" "$f_t1")" "$(mb "$f_sent")" "$f_tr" "$(rate "$total" "$f_tr")" "$f_t2"
printf '\nmover / floor throughput: snapshot %s, restore %s\n' \
  "$(echo "scale=2; $f_t1 / $m_t1" | bc -l)" "$(echo "scale=2; $f_tr / $m_tr" | bc -l)"
printf 'mover / restic time: snapshot %s, restore %s, second snapshot %s\n' \
  "$(echo "scale=2; $m_t1 / $r_t1" | bc -l)" "$(echo "scale=2; $m_tr / $r_tr" | bc -l)" \
  "$(echo "scale=2; $m_t2 / $r_t2" | bc -l)"
