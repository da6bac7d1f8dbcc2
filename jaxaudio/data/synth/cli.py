"""The shell wrapper every built-in generator's ``python -m`` entry shares."""
from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence


def run_cli(main: Callable[[Optional[Sequence[str]]], int], argv=None) -> int:
    """``main(argv)`` for the shell: a bad folder, file or setting is one ``error:`` line and exit 2."""
    from jaxaudio.errors import JaxAudioError

    try:
        return main(argv)
    except JaxAudioError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
