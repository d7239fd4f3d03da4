# The audit chain head checkpoint (a single row that may only move forward), seeded from the trail as it is,
# and the triggers that protect it; on SQLite also the trigger that refuses an insert replacing an event.

from django.db import migrations, models


def install(apps, schema_editor):
    from gdpr_requests.audit import triggers as audit_triggers

    AuditEvent = apps.get_model("gdpr_requests", "AuditEvent")
    AuditChainHead = apps.get_model("gdpr_requests", "AuditChainHead")
    using = schema_editor.connection.alias
    last = AuditEvent.objects.using(using).order_by("-sequence").values_list("sequence", "hash").first()
    if last:
        AuditChainHead.objects.using(using).create(id=1, sequence=last[0], hash=last[1])
    audit_triggers.install(schema_editor.connection)


def drop(apps, schema_editor):
    # Back to migration 0002's triggers: the head table's go (the table follows), and SQLite's replace guard.
    if schema_editor.connection.vendor == "postgresql":
        statements = [
            "DROP TRIGGER IF EXISTS auditchainhead_guard ON gdpr_requests_auditchainhead;",
            "DROP TRIGGER IF EXISTS auditchainhead_no_truncate ON gdpr_requests_auditchainhead;",
            "DROP FUNCTION IF EXISTS auditchainhead_guard();",
        ]
    else:
        statements = [
            f"DROP TRIGGER IF EXISTS {name};"
            for name in ("auditevent_no_replace", "auditchainhead_one_row", "auditchainhead_forward",
                         "auditchainhead_no_delete")
        ]
    with schema_editor.connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("gdpr_requests", "0008_sandbox_models_to_their_app"),
    ]

    operations = [
        migrations.CreateModel(
            name="AuditChainHead",
            fields=[
                ("id", models.PositiveSmallIntegerField(default=1, editable=False, primary_key=True, serialize=False)),
                ("sequence", models.PositiveBigIntegerField()),
                ("hash", models.CharField(max_length=64)),
            ],
            options={
                "constraints": [
                    models.CheckConstraint(condition=models.Q(("id", 1)), name="audit_chain_head_single_row")
                ],
            },
        ),
        migrations.RunPython(install, drop),
    ]
