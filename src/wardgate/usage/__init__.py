"""What passes through to the model servers: the tokens each call used (`wire`, `recorder`), the
budgets that bound them (`budgets`) and the reports of both (`reports`).

May import `config`, `storage` and `wardgate.errors`; the relay and the routes drive it.
"""
