# The Mixpanel sandbox's tables move to the development-only app mixpanel_sandbox (its migration 0001 creates
# them there). Production never installs that app, so there they are simply dropped; the sandbox's state is
# throwaway simulator data.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("gdpr_requests", "0007_pipeline_task_run_state"),
    ]

    operations = [
        migrations.DeleteModel(name="SandboxRateSlot"),
        migrations.DeleteModel(name="SandboxTask"),
    ]
