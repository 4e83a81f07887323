"""Listening: a microphone's 20 ms frames in, speech-start (barge-in), end of turn and the transcript out.

speech.py       whether a frame is speech: the page's energy detector (ported) and Silero VAD
turn_end.py     when a turn is over: a fixed silence, or Pipecat's smart-turn v3 after a short one
incremental.py  the transcript made at each pause, so that only the tail is left at the end
listener.py     the Listener that ties them together, fed frames at the pace they are heard
"""
