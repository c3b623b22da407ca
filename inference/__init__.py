"""Imaging and learning on arrays: loading, registration, finding, measurement, growth model, phantoms.

Nothing here touches the network or a database: functions take arrays, geometry and dataclasses.
"""
