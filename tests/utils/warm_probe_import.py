"""Read at import time (by the warm-start server when it preloads this module); "die" ends the
process, "slow" takes 10 s (a server still importing)."""

import os
import time

AT_IMPORT = os.environ.get("WARM_PROBE_IMPORT")
if AT_IMPORT == "die":  # a server that dies while importing
    os._exit(3)
if AT_IMPORT == "slow":
    time.sleep(10)
