#!/bin/sh
# mlb_driver as `mlbridge run` starts it (no arguments, in the run directory): run it on the
# driver.nml beside this script, then, like a NEMO-style model, report the last step reached in
# time.step (rank 0), which the launcher reads to tell a finished run from one that stopped.
here=$(cd "$(dirname "$0")" && pwd)
exe="${MLBRIDGE_BUILD_DIR:-$here/../../build}/bin/mlb_driver"
"$exe" "$here/driver.nml"
status=$?
if [ "$status" -eq 0 ] && [ "${OMPI_COMM_WORLD_RANK:-0}" = 0 ]; then
  sed -n 's/^ *nitend *= *\([0-9][0-9]*\).*/\1/p' "$here/driver.nml" > time.step
fi
exit "$status"
