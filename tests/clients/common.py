"""What the client scripts share."""

import time


def wait(what, check, seconds=60):
    """Polls `check` until it is true; exits with what it waited for (and
    the last error, if any) when `seconds` pass first."""
    deadline = time.time() + seconds
    last = None
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception as e:  # a transient state is fine; the deadline is not
            last = e
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what} (last error: {last})")
