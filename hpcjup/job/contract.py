"""What the laptop and the job agree on, in one place: the version of the documents the job writes
(state.json, connection.json, usage.json) and the oldest jupyter_server that may serve a session.

Shipped with every job (standard library only, no imports): the job's modules import it from beside
themselves, the laptop as `hpcjup.job.contract`.
"""

#: The schema of every document the job writes and hpcjup reads back.
SCHEMA = 1
#: jupyter_server 2.20 fixed a token-stealing XSS and reports the real port for port=0.
MIN_SERVER = (2, 20)
