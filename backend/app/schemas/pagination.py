"""Pagination parameters shared by list routes (query parameters `page` and `page_size`)."""

from typing import Annotated

from pydantic import Field

MAX_PAGE_SIZE = 100
# Deep offsets cost the database a scan of every skipped row; search narrows instead.
MAX_PAGE = 1000

Page = Annotated[int, Field(ge=1, le=MAX_PAGE)]
PageSize = Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)]
