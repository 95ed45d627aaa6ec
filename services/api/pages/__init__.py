"""Server-rendered pages (Jinja2): the plain form endpoint's thank-you page and the approval
pages a task's email links to. They work without JavaScript, by keyboard, at 360 px wide.
Their style is one small file, services/api/static/pages.css."""
