"""Clinical logic and DICOM output: guideline engine, SEG and TID 1500 SR writers, key images.

Pure: takes inference result types and plain values, never touches the network or a database.
"""
