"""NoduleTrack's service half: SCP/SCU, spool, database, job queue, workers, pipeline and CLI."""

__version__ = "0.1.0"
