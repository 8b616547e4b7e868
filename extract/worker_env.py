"""The process a decode/detect worker runs in: set before its first import of numpy or mediapipe.

Imported first by the server the workers fork from (``extract.pool.worker_context``), and by
``extract.worker.worker_main`` where workers are spawned instead.
"""

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the workers are one per core: no thread pools inside
os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's per-graph info lines, once per worker
# mediapipe imports TensorFlow only for optional API docs and works without it; blocking it keeps a
# worker at ~170 MiB instead of ~840 MiB, starts it in 1 s instead of 10, and lets openSMILE run.
sys.modules.setdefault("tensorflow", None)
