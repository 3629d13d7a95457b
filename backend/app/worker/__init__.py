"""The worker tier's jobs: delivery rules (app.worker.delivery) around one handler per task
(app.worker.tasks), each calling the product services that own the data it changes.

The worker app's routes and the web tier's in-process local queue both run deliveries through
:func:`app.worker.delivery.process`.
"""
