"""Regenerates the settings and metrics tables in README.md from their
declarations (`ferrule --print-settings-reference`,
`--print-metrics-reference`), each between its two marker comments."""

import pathlib
import re
import subprocess
import sys

root = pathlib.Path(__file__).resolve().parents[1]
ferrule = pathlib.Path(sys.executable).parent / "ferrule"
readme = root / "README.md"
text = readme.read_text()
for name in ("settings", "metrics"):
    table = subprocess.run([str(ferrule), f"--print-{name}-reference"], capture_output=True, text=True,
                           check=True).stdout
    text, count = re.subn(
        rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)",
        lambda m: m.group(1) + table + m.group(2),
        text,
        flags=re.S,
    )
    if count != 1:
        sys.exit(f"README.md lacks the {name} markers")
readme.write_text(text)
