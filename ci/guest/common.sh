# Sourced by the host-side guest scripts: where the guest work dir lives and what is cached there.
# DECREE_GUEST_DIR overrides the default; it holds the extracted kernel, the initramfs and runs/.
guest_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
guest_dir_default() { echo "${TMPDIR:-/tmp}/decree-guest-$(id -u)"; }
: "${DECREE_GUEST_DIR:=$(guest_dir_default)}"
export DECREE_GUEST_DIR
# Exit codes of run-guest.sh besides the guest command's own.
GUEST_RC_NO_MARKER=123   # -k: the guest finished without printing the kill marker
GUEST_RC_TIMEOUT=124     # the bound (-t) ran out; qemu was SIGKILLed
GUEST_RC_NO_RESULT=125   # the guest produced no exit code (boot failure, panic, set-up failure)
