"""A Mesos custom executor written with pymesos (PyPI `pymesos` 0.3.15),
unchanged, run by a Wasmos agent for the frameworks of
pymesos_scheduler.py (mode `executor`).

Each task's `data` is a base64 shell command: the executor reports
TASK_RUNNING, runs it, tells its framework how it ended (a framework
message `<task> exited <code>`), then reports TASK_FINISHED or
TASK_FAILED with the command's output (its first 1 KiB) as `data`. A KILL ends the command and
reports TASK_KILLED. A framework message `ping` is answered `echo:ping`.
The executor itself never runs as root: it refuses to start if it does.
"""

import os
import signal
import subprocess
import threading
import time

from pymesos import Executor, MesosExecutorDriver, decode_data, encode_data


class Runner(Executor):
    def __init__(self):
        self.lock = threading.Lock()
        self.procs = {}
        self.killed = set()

    def update(self, driver, task_id, state, message="", data=None):
        status = dict(task_id=dict(value=task_id), state=state, message=message,
                      timestamp=time.time())
        if data is not None:
            status["data"] = encode_data(data)
        driver.sendStatusUpdate(status)

    def launchTask(self, driver, task):
        task_id = task["task_id"]["value"]
        command = decode_data(task["data"]).decode()

        def run():
            proc = subprocess.Popen(command, shell=True, start_new_session=True,
                                    stdout=subprocess.PIPE)
            with self.lock:
                self.procs[task_id] = proc
            self.update(driver, task_id, "TASK_RUNNING")
            out = proc.communicate()[0][:1024]
            code = proc.returncode
            driver.sendFrameworkMessage(encode_data(f"{task_id} exited {code}".encode()))
            with self.lock:
                killed = task_id in self.killed
            state = "TASK_KILLED" if killed else ("TASK_FINISHED" if code == 0 else "TASK_FAILED")
            self.update(driver, task_id, state, f"exited {code}", out)

        threading.Thread(target=run, daemon=True).start()

    def killTask(self, driver, task_id):
        with self.lock:
            self.killed.add(task_id["value"])
            proc = self.procs.get(task_id["value"])
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)

    def frameworkMessage(self, driver, message):
        driver.sendFrameworkMessage(encode_data(b"echo:" + decode_data(message)))


if __name__ == "__main__":
    if os.getuid() == 0:
        raise SystemExit("the executor runs as root")
    MesosExecutorDriver(Runner(), use_addict=False).run()
