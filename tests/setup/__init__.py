"""What a project gets at set-up: settings and system checks, migrations, loading without
Django configured."""
