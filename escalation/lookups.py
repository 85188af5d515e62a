"""``field__in_array=[...]``: ``field = ANY(%s)`` with one array parameter on PostgreSQL, ``IN`` elsewhere.

Django's ``__in`` writes one placeholder per value. With thousands of values (a sweep's batch of
failures, their outbox keys) the client-side binding spends longer parsing those placeholders than the
server spends on the query; an array is one parameter whatever its length. Values are compared as
given: pass keys, numbers and strings, not model instances.
"""

from django.db.models import Field, ForeignObject, Lookup
from django.db.models.lookups import In

from escalation.services.statements import array_text


class InArray(Lookup):
    lookup_name = "in_array"
    prepare_rhs = False

    def as_sql(self, compiler, connection):
        values = list(self.rhs)
        if connection.vendor != "postgresql":
            return In(self.lhs, values).as_sql(compiler, connection)
        lhs, lhs_params = self.process_lhs(compiler, connection)
        try:
            array = array_text(values)  # psycopg adapts a list element by element, slowly
        except TypeError:
            array = values
        return f"{lhs} = ANY(%s)", [*lhs_params, array]


Field.register_lookup(InArray)
ForeignObject.register_lookup(InArray)  # relations keep lookups of their own
