#!/usr/bin/env python3
# Test hook: sleeps longer than SLEEPY_TIMEOUT allows, so every run times out.
# Inputs: --url. Outputs: nothing.
import time

time.sleep(30)
