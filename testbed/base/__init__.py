"""The bottom layer: the one clock, the bytes on the wire (frames and codecs), key paths and bounded file reading.

Every other layer may import these; they import nothing from the project.
"""
