"""`bastion compare`: which defense is worth its price, measured on the user's own model family and data.

``config`` (what to compare), ``build`` (train or load each defense; costs), ``run`` (the jobs, on Dask,
resumable), ``table`` (the rows from the stored runs; Markdown, HTML, plots).
"""
