from django.conf import settings
from django.db import models


class Member(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="member")
    tenant_id = models.IntegerField()

    class Meta:
        app_label = "shop"


class Category(models.Model):
    tenant_id = models.IntegerField()
    name = models.CharField(max_length=200)

    class Meta:
        app_label = "shop"
