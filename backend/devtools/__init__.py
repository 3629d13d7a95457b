"""Development tools, not part of either app: the demo-data seeder and a local stand-in for
Elastic Beanstalk's SQS daemon."""
