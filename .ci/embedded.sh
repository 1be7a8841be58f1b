#!/usr/bin/env bash
# Builds the bare-metal example (examples/cortex-m, thumbv7em-none-eabihf = Cortex-M4F) and runs it
# under QEMU (MPS2-AN386), then reports its section sizes. Called by .ci/run before the tests, so
# that tests/embedded_qemu.rs finds the firmware and compares what it prints with the host.
#
# On a fresh Debian bookworm machine it installs what it needs (idempotent: nothing is installed
# when everything is present). rustup cannot download the thumbv7em target or the library source
# here, so the firmware is built with Debian's rustc-web/cargo-web (1.96) and its rust-web-src via
# -Zbuild-std (RUSTC_BOOTSTRAP=1), linked with ld.lld (see docs/embedded.md).
set -euo pipefail
cd "$(dirname "$0")/.."

firmware_dir=examples/cortex-m
elf="$firmware_dir/target/thumbv7em-none-eabihf/release/sd-attention-cortex-m"
output="$firmware_dir/target/qemu-output.txt"

packages=(rustc-web cargo-web rust-web-src qemu-system-arm lld)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
# A section-size tool: llvm-size if present, else GNU size from binutils (reads ARM ELF too).
if ! command -v llvm-size >/dev/null && ! command -v size >/dev/null; then
    missing+=(binutils)
fi
if ((${#missing[@]})); then
    echo "installing from Debian: ${missing[*]}"
    sudo=()
    if [[ $(id -u) != 0 ]]; then sudo=(sudo); fi
    log=$(mktemp)
    # Wait for the dpkg lock rather than fail if another installer holds it.
    if ! { "${sudo[@]}" apt-get -qq -o DPkg::Lock::Timeout=600 update &&
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get -qq -y -o DPkg::Lock::Timeout=600 \
            install "${missing[@]}"; } >"$log" 2>&1; then
        cat "$log"
        exit 1
    fi
    rm -f "$log"
fi
test -d /usr/lib/rustlib/src/rust/library || { echo "rust-web-src did not install the library source"; exit 1; }

# rustup's cargo/rustc come first on PATH; build-std must use Debian's, whose sysroot (/usr) holds
# the library source. Only that toolchain is visible to the build.
echo "building the firmware with $(/usr/bin/rustc --version)"
(
    cd "$firmware_dir"
    env PATH=/usr/bin:/bin RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
        CARGO_TERM_COLOR=never /usr/bin/cargo build --release --locked --quiet
)

echo "running it under QEMU (qemu-system-arm, mps2-an386, cortex-m4)"
status=0
timeout 120 qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic \
    -semihosting-config enable=on,target=native -kernel "$elf" >"$output" || status=$?
cat "$output"
if [[ $status != 0 ]] || ! grep -q '^SDA end ok' "$output"; then
    echo "firmware run failed (exit status $status)"
    exit 1
fi

# The trained model on the microcontroller (examples/cortex-m/src/generate.rs): greedy text from a
# fixed prompt with the embedded checkpoint, under -icount so that SysTick counts instructions.
generate_elf="$firmware_dir/target/thumbv7em-none-eabihf/release/generate"
generate_output="$firmware_dir/target/qemu-generate-output.txt"
echo "running the text generation under QEMU (-icount shift=0)"
status=0
timeout 120 qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic \
    -semihosting-config enable=on,target=native -icount shift=0 -kernel "$generate_elf" >"$generate_output" || status=$?
cat "$generate_output"
if [[ $status != 0 ]] || ! grep -q '^SDA end ok' "$generate_output"; then
    echo "generation firmware run failed (exit status $status)"
    exit 1
fi

echo "section sizes of $elf (bytes; text includes .vector_table and .rodata):"
if command -v llvm-size >/dev/null; then size_tool=llvm-size; else size_tool=size; fi
"$size_tool" "$elf"
"$size_tool" -A "$elf" | grep -E '^\.(vector_table|text|rodata|data|bss|uninit) '
"$size_tool" -A "$generate_elf" | grep -E '^\.(vector_table|text|rodata|data|bss|uninit) '
