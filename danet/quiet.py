"""Paddle's C++ log level for the command-line entry points; imported by each before Paddle loads.

Paddle reads ``GLOG_minloglevel`` once, when its core library loads. The entry points show its errors only:
its INFO lines ("New Executor is Running ...") and one-time warnings such as Paddle 3.3's "Paddle static
graph(PIR) not support input out tensor for now!!!!!" (printed at the first addition traced into a Program,
whatever the model) tell a user nothing. ``--debug`` on the command line shows them all; a
``GLOG_minloglevel`` already set in the environment wins. Importing :mod:`danet` itself changes nothing.
"""
import os
import sys

os.environ.setdefault("GLOG_minloglevel", "0" if "--debug" in sys.argv else "2")
