"""Import each module named in argv[1:] and call its main(["--help"]), as `python -m MOD
--help` would (a package's main is its __main__ module's); print as JSON the modules that did
not exit 0 with a usage message."""

import contextlib
import importlib
import io
import json
import sys

bad = {}
for name in sys.argv[1:]:
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            module = importlib.import_module(name)
            if not hasattr(module, "main"):        # a package: python -m runs its __main__
                module = importlib.import_module(name + ".__main__")
            module.main(["--help"])
        bad[name] = "main(['--help']) returned instead of exiting"
    except SystemExit as e:
        if e.code not in (0, None) or "usage" not in out.getvalue().lower():
            bad[name] = f"exit {e.code}: {out.getvalue()[-500:]}"
print(json.dumps(bad))
