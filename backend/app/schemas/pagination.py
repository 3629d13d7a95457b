"""Pagination parameters shared by list routes."""

from typing import Annotated

from fastapi import Query

MAX_PAGE_SIZE = 100
# Deep offsets cost the database a scan of every skipped row; search narrows instead.
MAX_PAGE = 1000

Page = Annotated[int, Query(ge=1, le=MAX_PAGE)]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
