"""``python -m speechsum …``: the same as the ``speechsum`` command."""

import sys

from speechsum.cli import main

if __name__ == "__main__":
    sys.argv[0] = "speechsum"  # the Lightning CLI's usage line names the program from it
    main()
