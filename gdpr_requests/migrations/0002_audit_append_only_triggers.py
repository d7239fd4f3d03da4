from django.db import migrations


def install(apps, schema_editor):
    from gdpr_requests.audit import triggers as audit_triggers

    audit_triggers.install(schema_editor.connection)


def drop(apps, schema_editor):
    from gdpr_requests.audit import triggers as audit_triggers

    audit_triggers.drop(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("gdpr_requests", "0001_initial")]

    operations = [migrations.RunPython(install, drop)]
