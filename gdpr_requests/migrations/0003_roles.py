"""Roles as groups: Privacy staff work requests; Auditors read everything and change nothing."""

from django.db import migrations

MODELS = [
    "mixpanelproject",
    "datasubjectrequest",
    "mixpaneltask",
    "taskrequestlink",
    "apicall",
    "subjectexport",
    "auditevent",
    "requestnote",
]

STAFF = {
    "view": MODELS,
    "add": ["datasubjectrequest", "requestnote"],
    "change": ["datasubjectrequest"],
    "work": ["datasubjectrequest"],
}


def create_roles(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    # Permissions are normally created after all migrations; the groups need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")

    def perms(codenames):
        return list(Permission.objects.filter(content_type__app_label="gdpr_requests", codename__in=codenames))

    staff, _ = Group.objects.get_or_create(name="Privacy staff")
    codenames = [f"{action}_{model}" for action, models in STAFF.items() if action != "work" for model in models]
    staff.permissions.set(perms(codenames + ["work_request"]))

    auditors, _ = Group.objects.get_or_create(name="Auditors")
    auditors.permissions.set(perms([f"view_{model}" for model in MODELS]))


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=["Privacy staff", "Auditors"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("gdpr_requests", "0002_audit_append_only_triggers"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
