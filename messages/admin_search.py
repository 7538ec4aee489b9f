"""The admin's message search: PostgreSQL's full-text index (Message.search_vector), the same
query syntax as the API's `q` (websearch_to_tsquery), instead of the admin's ILIKE scans.

Staff without `mailstore.read_mail_content` search subjects and senders only: the index also
holds the text, and a search that matches words of a body would tell them what it says.
"""

from __future__ import annotations

from django.contrib.postgres.search import SearchQuery
from django.db import DatabaseError, connection, transaction
from django.db.models import BooleanField, QuerySet
from django.db.models.expressions import RawSQL

from .selectors import SEARCH_CONFIG

MAX_SEARCH_CHARS = 1000


class SearchNotUnderstood(ValueError):
    pass


def search_check(term: str) -> None:
    """Raises SearchNotUnderstood for a term PostgreSQL cannot parse (some inputs, e.g. 33
    dashes in a row, overflow websearch_to_tsquery's stack) or one too long."""
    if len(term) > MAX_SEARCH_CHARS:
        raise SearchNotUnderstood(f"A search has at most {MAX_SEARCH_CHARS} characters.")
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT websearch_to_tsquery(%s::regconfig, %s)", [SEARCH_CONFIG, term])
    except DatabaseError:
        raise SearchNotUnderstood("This search cannot be understood.") from None


def message_search(queryset: QuerySet, term: str, *, with_text: bool) -> QuerySet:
    """QUERYSET's messages matching TERM: a Message-ID in <angle brackets> exactly, otherwise
    words through the index (WITH_TEXT: the body's words too). Raises SearchNotUnderstood."""
    term = term.strip()
    if not term:
        return queryset
    if term.startswith("<") and term.endswith(">") and " " not in term:
        return queryset.filter(message_id_header=term)
    search_check(term)
    found = queryset.filter(
        search_vector=SearchQuery(term, search_type="websearch", config=SEARCH_CONFIG)
    )
    if with_text:
        return found
    # The index finds the candidates; ts_filter keeps the subject's (A) and sender's (B) words.
    metadata_only = RawSQL(  # noqa: S611 (the table name is the model's; TERM is a parameter)
        f"ts_filter({queryset.model._meta.db_table}.search_vector, '{{a,b}}') "
        "@@ websearch_to_tsquery(%s::regconfig, %s)",
        [SEARCH_CONFIG, term],
        output_field=BooleanField(),
    )
    return found.filter(metadata_only)
