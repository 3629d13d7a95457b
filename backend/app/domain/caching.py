"""The product's cache namespaces and the tags that invalidate them.

Declared in one module that both tiers import, so an invalidation sent by any process reaches
every namespace using the tag. The stored names stay as first deployed: renaming one would split
old and new processes' keys during a rolling deploy.
"""

from app.services.cache import Namespace

JOBS_TAG = "jobs"
ASSESSMENTS_TAG = "tests"
CANDIDATES_TAG = "candidates"

JOB_LISTINGS = Namespace("job_listings", "job_listings", tags=(JOBS_TAG,))
JOB_DETAIL = Namespace("job_detail", "job_listings", tags=(JOBS_TAG,))
ASSESSMENTS_AVAILABLE = Namespace("tests_available", "test_config", tags=(ASSESSMENTS_TAG,))
ASSESSMENT_QUESTIONS = Namespace("test_config", "test_config", tags=(ASSESSMENTS_TAG,))
ADMIN_DASHBOARD = Namespace("admin_dashboard", "admin_dashboard")
CANDIDATE_SEARCH = Namespace("candidate_search", "search_results", tags=(CANDIDATES_TAG,))
AI_QUESTIONS = Namespace("ai_questions", "ai_response")
