"""What every command stands on: its errors and console (`errors`), its files (atomic writes,
locks, outputs, disk space: `files`), the flag ranges every parser checks (`flags`) and the
malloc setting of entry points (`malloc`).
"""
